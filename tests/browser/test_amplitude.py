"""Amplitude in Chromium, US and EU: the gzip-served SDK, remote config,
JSON events after a CORS preflight, and a Session Replay upload sent with
Content-Encoding: gzip, all first-party."""

from __future__ import annotations

import gzip
import json

import pytest

from ..fakes import Reply
from .conftest import StartBrowser
from .harness import query_of, vendor_script

SDK = "https://cdn.amplitude.com/libs/analytics-browser-2.11.0-min.js.gz"
SNIPPET = """<script>
window.amplitude = {{_q: [], init: function() {{ this._q.push(["init", arguments]); }},
  track: function() {{ this._q.push(["track", arguments]); }}}};
amplitude.init("0123456789abcdef", {{serverZone: "{zone}"}});
amplitude.track("Purchase", {{price: 10}});
</script>
<script src="{src}"></script>
<script>
amplitude.flush().then(function () {{
  return amplitude.replay({{type: "snapshot", nodes: 3}});
}}).then(function () {{ document.title = "sent"; }});
</script>"""

HOSTS = {
    "US": ("api2.amplitude.com", "api-sr.amplitude.com", "sr-client-cfg.amplitude.com"),
    "EU": (
        "api.eu.amplitude.com",
        "api-sr.eu.amplitude.com",
        "sr-client-cfg.eu.amplitude.com",
    ),
}


@pytest.mark.parametrize("zone", ["US", "EU"])
async def test_amplitude(browser_run: StartBrowser, zone: str) -> None:
    api, replay_host, config_host = HOSTS[zone]
    run = await browser_run()
    run.vendor.reply(
        "cdn.amplitude.com",
        "/libs/analytics-browser-2.11.0-min.js.gz",
        Reply(
            200,
            gzip.compress(vendor_script("amplitude.js")),
            [("Content-Type", "application/javascript"), ("Content-Encoding", "gzip")],
        ),
    )
    json_headers = [("Content-Type", "application/json")]
    run.vendor.reply(config_host, "/config", Reply(200, b"{}", json_headers))
    run.vendor.reply(api, "/2/httpapi", Reply(200, b'{"code":200}', json_headers))
    src = run.tag_url(SDK)
    assert src == f"{run.proxy_url}/am/libs/analytics-browser-2.11.0-min.js.gz"

    await run.open(SNIPPET.format(src=src, zone=zone))
    config = await run.beacon(config_host, "/config")
    events = await run.beacon(api, "/2/httpapi")
    replay = await run.beacon(replay_host, "/sessions/v2/track")
    await run.page.wait_for_function("document.title === 'sent'")

    assert query_of(config)["api_key"] == "0123456789abcdef"
    assert events.header("Content-Type") == "application/json"
    batch = json.loads(events.body)
    assert batch["api_key"] == "0123456789abcdef"
    (event,) = batch["events"]
    assert (event["event_type"], event["ip"]) == ("Purchase", "$remote")
    assert event["event_properties"] == {"price": 10}
    assert replay.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(replay.body)) == {"type": "snapshot", "nodes": 3}
    assert query_of(replay)["device_id"] == event["device_id"]
    for beacon in (config, events, replay):
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
