"""Matomo in Chromium, with only the script's src changed.

The snippet still names the Matomo host in setTrackerUrl, as a site that
changed nothing but `g.src` would: the runtime shim maps the tracker's
sendBeacon and bulk XHR to tagproxy. The host is the rule's default setting
(matomo.invalid), which the harness loads as is.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from .conftest import StartBrowser
from .harness import vendor_script

HOST = "matomo.invalid"
SCRIPT = f"https://{HOST}/matomo.js"
SNIPPET = """<script>
var _paq = window._paq = window._paq || [];
_paq.push(['trackPageView']);
_paq.push(['enableLinkTracking']);
_paq.push(['trackEvent', 'Video', 'Play', 'intro']);
_paq.push(['trackEvent', 'Video', 'Pause', 'intro']);
(function() {{
  var u="//{host}/";
  _paq.push(['setTrackerUrl', u+'matomo.php']);
  _paq.push(['setSiteId', '1']);
  var d=document, g=d.createElement('script'), s=d.getElementsByTagName('script')[0];
  g.async=true; g.src='{src}'; s.parentNode.insertBefore(g,s);
}})();
</script>"""


async def test_matomo_only_src_changed(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(SCRIPT, vendor_script("matomo.js"))
    src = run.tag_url(SCRIPT)
    assert src == f"{run.proxy_url}/mt/matomo.js"

    await run.open(
        SNIPPET.format(host=HOST, src=src),
        cookies={"_pk_id.1.a1b2": "feedfacecafe1234.1700000000", "_pk_ses.1.a1b2": "1"},
    )
    single, bulk = await run.beacons(HOST, "/matomo.php", count=2)
    if single.body.startswith(b"{"):
        single, bulk = bulk, single

    # The snippet's commands run in order: setTrackerUrl and setSiteId come
    # last, so everything is sent once they are known.
    page = dict(parse_qsl(single.body.decode()))
    assert single.method == "POST"
    # A Blob's type reaches the wire lower-cased.
    assert single.header("Content-Type") == (
        "application/x-www-form-urlencoded; charset=utf-8"
    )
    assert (page["idsite"], page["rec"], page["action_name"]) == ("1", "1", "shop")
    assert page["url"] == f"{run.site_url}/"
    requests = json.loads(bulk.body)["requests"]
    events = [dict(parse_qsl(r.lstrip("?"))) for r in requests]
    assert [(e["e_c"], e["e_a"]) for e in events] == [
        ("Video", "Play"),
        ("Video", "Pause"),
    ]
    for beacon in (single, bulk):
        run.assert_visitor(beacon, cookies=["_pk_*"])
        assert "_pk_id.1.a1b2=feedfacecafe1234.1700000000" in str(beacon.all("Cookie"))
    run.assert_only_first_party()
    run.assert_no_errors()
