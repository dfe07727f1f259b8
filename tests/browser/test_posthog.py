"""PostHog in Chromium, US and EU: library, remote config and recorder from
the assets host, flags, gzip events and session recording to the API host.

Two ways a site goes first-party: PostHog's own `api_host` set to tagproxy
(the snippet then derives every URL from it), or only the library's `src`
changed with `api_host` left at PostHog, where the library builds the
assets host at run time and the runtime shim maps every call.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass

import pytest

from ..fakes import Reply
from .conftest import StartBrowser
from .harness import BrowserRun, query_of, vendor_script

TOKEN = "phc_TEST123"
# The PostHog snippet as a site pastes it (written for these tests): it
# queues calls and loads array.js from the assets host derived from api_host.
SNIPPET = """<script>
!function (t, e) {{
  if (e.__SV) return;
  window.posthog = e; e._i = []; e._q = [];
  e.init = function (token, config) {{
    var p = t.createElement("script");
    p.async = true; p.crossOrigin = "anonymous";
    p.src = {array_src};
    t.head.appendChild(p);
    e._i.push([token, config, "posthog"]);
  }};
  e.capture = function () {{
    e._q.push(["capture"].concat([].slice.call(arguments)));
  }};
  e.__SV = 1;
}}(document, window.posthog || []);
posthog.init("{token}", {{api_host: "{api_host}"}});
posthog.capture("signup", {{plan: "pro"}});
</script>"""
FLAGS = json.dumps({"featureFlags": {"new-checkout": True}}).encode()
STATE = json.dumps({"distinct_id": "visitor-distinct-1", "$sesid": "ses-earlier"})


@dataclass(frozen=True)
class Region:
    name: str
    api: str
    assets: str
    only_src: bool  # the site changed only the library's src, not api_host


REGIONS = [
    Region("us", "us.i.posthog.com", "us-assets.i.posthog.com", only_src=False),
    Region("eu", "eu.i.posthog.com", "eu-assets.i.posthog.com", only_src=True),
]


def serve_posthog(run: BrowserRun, region: Region) -> None:
    assets = f"https://{region.assets}"
    run.serve_vendor(f"{assets}/static/array.js", vendor_script("posthog_array.js"))
    run.serve_vendor(
        f"{assets}/array/{TOKEN}/config.js", vendor_script("posthog_config.js")
    )
    run.serve_vendor(
        f"{assets}/static/recorder.js", vendor_script("posthog_recorder.js")
    )
    json_type = ("Content-Type", "application/json")
    run.vendor.reply(region.api, "/flags/", Reply(200, FLAGS, [json_type]))


def snippet(run: BrowserRun, region: Region) -> str:
    if region.only_src:
        array_src = json.dumps(run.tag_url(f"https://{region.assets}/static/array.js"))
        api_host = f"https://{region.api}"
    else:
        # PostHog's documented derivation, now a no-op on our host.
        array_src = (
            'config.api_host.replace(".i.posthog.com", "-assets.i.posthog.com")'
            ' + "/static/array.js"'
        )
        api_host = run.tag_url(f"https://{region.api}").rstrip("/")
    return SNIPPET.format(array_src=array_src, api_host=api_host, token=TOKEN)


def gzip_json(body: bytes) -> object:
    return json.loads(gzip.decompress(body))


@pytest.mark.parametrize("region", REGIONS, ids=[r.name for r in REGIONS])
async def test_posthog_events_flags_and_recording(
    browser_run: StartBrowser, region: Region
) -> None:
    run = await browser_run()
    serve_posthog(run, region)
    await run.open(snippet(run, region), cookies={f"ph_{TOKEN}_posthog": STATE})

    flags = await run.beacon(region.api, "/flags/")
    assert flags.method == "POST"
    assert query_of(flags) == {"v": "2", "config": "true"}
    assert json.loads(flags.body) == {
        "token": TOKEN,
        "distinct_id": "visitor-distinct-1",
    }

    batch = await run.beacon(region.api, "/i/v0/e/")
    query = query_of(batch)
    assert (query["ip"], query["ver"], query["compression"]) == (
        "0",
        "1.200.0",
        "gzip-js",
    )
    assert query["_"].isdigit()
    events = gzip_json(batch.body)
    assert isinstance(events, list)
    assert [e["event"] for e in events] == ["$pageview", "signup"]
    signup = events[1]["properties"]
    assert signup["distinct_id"] == "visitor-distinct-1"
    assert signup["$session_id"] == "ses-earlier"
    assert signup["$current_url"] == f"{run.site_url}/"
    assert signup["$feature/new-checkout"] is True  # the flags answer came back
    assert signup["plan"] == "pro"

    snapshot = await run.beacon(region.api, "/s/")
    recordings = gzip_json(snapshot.body)
    assert isinstance(recordings, list)
    [recording] = recordings
    assert recording["event"] == "$snapshot"
    assert recording["properties"]["$session_id"] == "ses-earlier"
    assert recording["properties"]["$snapshot_data"][0]["data"]["title"] == "shop"
    for beacon in (flags, batch, snapshot):
        run.assert_visitor(beacon, cookies=[])
    for beacon in (batch, snapshot):
        assert beacon.header("Content-Type") == "text/plain"

    # Library, remote config and recorder all came from the region's assets
    # host, through tagproxy.
    fetched = {r.path for r in run.vendor.to(region.assets)}
    assert fetched == {
        "/static/array.js",
        f"/array/{TOKEN}/config.js",
        "/static/recorder.js",
    }
    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()
