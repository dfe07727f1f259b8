"""Segment in Chromium: analytics.js and its bundle from the CDN base it finds
in its own src, the settings JSON whose scheme-less API host is rewritten,
and page (sendBeacon), track (fetch keepalive) and metrics calls."""

from __future__ import annotations

import json

from .conftest import StartBrowser
from .harness import vendor_script

KEY = "WRITEKEY1"
LIBRARY = f"https://cdn.segment.com/analytics.js/v1/{KEY}/analytics.min.js"
BUNDLE = "https://cdn.segment.com/analytics-next/bundles/ajs-destination.bundle.3c1f.js"
SETTINGS = f"https://cdn.segment.com/v1/projects/{KEY}/settings"
SETTINGS_JSON = {
    "integrations": {
        "Segment.io": {
            "apiKey": KEY,
            "apiHost": "api.segment.io/v1",
            "protocol": "https",
        }
    },
    "plan": {"track": {"__default": {"enabled": True}}},
    "metrics": {"sampleRate": 1, "host": "api.segment.io/v1"},
}
# The Segment snippet as a site pastes it (written for these tests), with
# the CDN base changed to what `tagproxy url` prints.
SNIPPET = """<script>
!function () {{
  var analytics = window.analytics = window.analytics || [];
  if (analytics.invoked) return;
  analytics.invoked = true;
  ["page", "track", "identify"].forEach(function (method) {{
    analytics[method] = function () {{
      analytics.push([method].concat(Array.prototype.slice.call(arguments)));
      return analytics;
    }};
  }});
  analytics.load = function (key) {{
    var t = document.createElement("script");
    t.async = true;
    t.src = "{cdn}/analytics.js/v1/" + key + "/analytics.min.js";
    document.head.appendChild(t);
  }};
  analytics._writeKey = "{key}";
  analytics.load("{key}");
  analytics.page();
  analytics.track("Order Completed", {{revenue: 42.5, currency: "EUR"}});
}}();
</script>"""


async def test_segment_page_track_and_metrics(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(LIBRARY, vendor_script("segment_analytics.js"))
    run.serve_vendor(BUNDLE, vendor_script("segment_bundle.js"))
    run.serve_vendor(SETTINGS, json.dumps(SETTINGS_JSON).encode(), "application/json")
    src = run.tag_url(LIBRARY)
    assert src == f"{run.proxy_url}/sg/analytics.js/v1/{KEY}/analytics.min.js"
    cdn = src.split("/analytics.js/")[0]
    await run.open(
        SNIPPET.format(cdn=cdn, key=KEY),
        cookies={"ajs_anonymous_id": "anon-visitor-7", "ajs_user_id": "u-99"},
    )

    page = await run.beacon("api.segment.io", "/v1/p")
    track = await run.beacon("api.segment.io", "/v1/t")
    metrics = await run.beacon("api.segment.io", "/v1/m")
    page_body, track_body = json.loads(page.body), json.loads(track.body)
    assert page_body["type"] == "page"
    assert track_body["type"] == "track"
    assert track_body["event"] == "Order Completed"
    assert track_body["properties"] == {"revenue": 42.5, "currency": "EUR"}
    for body in (page_body, track_body):
        assert body["anonymousId"] == "anon-visitor-7"
        assert body["writeKey"] == KEY
        assert body["context"]["page"]["url"] == f"{run.site_url}/"
        assert body["messageId"].startswith("ajs-next-")  # the bundle ran
    assert page.header("Content-Type") == "text/plain;charset=UTF-8"  # sendBeacon
    assert track.header("Content-Type") == "text/plain"
    series = json.loads(metrics.body)["series"]
    assert series[0]["metric"] == "analytics_js.invoke"
    for beacon in (page, track, metrics):
        assert beacon.method == "POST"
        assert beacon.query == ""
        run.assert_visitor(beacon, cookies=[])

    # The settings the page read name the API host first-party, still
    # without a scheme (the library glues "https://" to it).
    status, body = await run.proxy_get(f"/sg/v1/projects/{KEY}/settings")
    served = json.loads(body)
    first_party = f"{run.proxy_url.split('://')[1]}/sg/api/v1"
    assert status == 200
    assert served["integrations"]["Segment.io"]["apiHost"] == first_party
    assert served["metrics"]["host"] == first_party

    # Library, bundle and settings came through tagproxy from the CDN.
    fetched = {r.path for r in run.vendor.to("cdn.segment.com")}
    assert fetched == {
        f"/analytics.js/v1/{KEY}/analytics.min.js",
        "/analytics-next/bundles/ajs-destination.bundle.3c1f.js",
        f"/v1/projects/{KEY}/settings",
    }
    await run.settle()
    run.assert_only_first_party()
    run.assert_no_errors()
