"""Mixpanel in Chromium: only the library's src changed; its default API host
is rewritten, the XHR form post lands with ip=1 and the visitor's address
in X-Real-IP."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl

from .conftest import StartBrowser
from .harness import VISITOR_IP, query_of, vendor_script

LIBRARY = "https://cdn.mxpnl.com/libs/mixpanel-2-latest.min.js"
SNIPPET = """<script>
(function(d, m) {{
  var lib = {{_i: []}};
  ["init", "track"].forEach(function(name) {{
    lib[name] = function() {{
      lib._i.push([name].concat(Array.prototype.slice.call(arguments)));
    }};
  }});
  window.mixpanel = lib;
  var s = d.createElement("script"); s.async = true; s.src = "{src}";
  d.head.appendChild(s);
}})(document);
mixpanel.init("tok123");
mixpanel.track("Signup", {{plan: "pro"}});
</script>"""


async def test_mixpanel_track(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(LIBRARY, vendor_script("mixpanel.js"))
    src = run.tag_url(LIBRARY)
    assert src == f"{run.proxy_url}/mp/lib/libs/mixpanel-2-latest.min.js"

    await run.open(SNIPPET.format(src=src))
    beacon = await run.beacon("api-js.mixpanel.com", "/track/")

    assert beacon.method == "POST"
    query = query_of(beacon)
    assert (query["verbose"], query["ip"]) == ("1", "1")
    assert beacon.header("Content-Type") == "application/x-www-form-urlencoded"
    data = dict(parse_qsl(beacon.body.decode()))["data"]
    event = json.loads(base64.b64decode(data))
    assert event["event"] == "Signup"
    assert event["properties"]["plan"] == "pro"
    assert event["properties"]["token"] == "tok123"
    assert event["properties"]["$current_url"] == f"{run.site_url}/"
    assert beacon.all("X-Real-IP") == [VISITOR_IP]
    run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
