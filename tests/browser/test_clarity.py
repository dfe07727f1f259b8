"""Microsoft Clarity in Chromium: tag and library first-party, gzip upload.

The visitor was on the site before it went first-party, so its _clsk cookie
still names Clarity's own upload host: the library glues "https://" to it at
run time, and only the runtime shim can bring that upload to tagproxy.
"""

from __future__ import annotations

import gzip
import json

from .conftest import StartBrowser
from .harness import vendor_script

TAG = "https://www.clarity.ms/tag/proj1234"
LIBRARY = "https://scripts.clarity.ms/0.8.9/clarity.js"
SNIPPET = """<script>
(function(c,l,a,r,i,t,y){{
  c[a]=c[a]||function(){{(c[a].q=c[a].q||[]).push(arguments)}};
  t=l.createElement(r);t.async=1;t.src="{src}";
  y=l.getElementsByTagName(r)[0];y.parentNode.insertBefore(t,y);
}})(window, document, "clarity", "script", "proj1234");
clarity("set", "plan", "pro");
</script>"""


async def test_clarity_upload_from_a_remembered_host(
    browser_run: StartBrowser,
) -> None:
    run = await browser_run()
    run.serve_vendor(TAG, vendor_script("clarity_tag.js"))
    run.serve_vendor(LIBRARY, vendor_script("clarity.js"))
    src = run.tag_url(TAG)
    assert src == f"{run.proxy_url}/cl/tag/proj1234"

    await run.open(
        SNIPPET.format(src=src),
        cookies={
            "_clck": "user42|2|f",
            "_clsk": "sess9|1700000000000|3|1|l.clarity.ms/collect",
        },
    )
    upload = await run.beacon("l.clarity.ms", "/collect")
    pixel = await run.beacon("c.clarity.ms", "/c.gif")

    assert upload.method == "POST"
    assert upload.header("Content-Type") == "application/x-clarity-gzip"
    data = json.loads(gzip.decompress(upload.body))
    assert (data["p"], data["u"], data["s"], data["n"]) == (
        "proj1234",
        "user42",
        "sess9",
        4,
    )
    assert data["e"][0] == ["page", f"{run.site_url}/", "shop"]
    assert data["e"][1] == ["set", "plan", "pro"]
    assert pixel.query == "ctsa=mr&CtsSyncId=user42"
    for beacon in (upload, pixel):
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()

    # The library stored the (first-party) upload URL for the next page.
    cookies = {c["name"]: c["value"] for c in await run.context.cookies()}
    assert cookies["_clsk"].endswith("|l.clarity.ms/collect")


async def test_clarity_first_visit_uses_the_rewritten_config(
    browser_run: StartBrowser,
) -> None:
    run = await browser_run()
    run.serve_vendor(TAG, vendor_script("clarity_tag.js"))
    run.serve_vendor(LIBRARY, vendor_script("clarity.js"))
    await run.open(SNIPPET.format(src=run.tag_url(TAG)))

    upload = await run.beacon("k.clarity.ms", "/collect")
    assert json.loads(gzip.decompress(upload.body))["n"] == 1
    run.assert_visitor(upload, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()

    # Stored as the absolute first-party URL without its scheme, so the next
    # page's "https://" + stored value still reaches tagproxy.
    cookies = {c["name"]: c["value"] for c in await run.context.cookies()}
    stored = cookies["_clsk"].rsplit("|", 1)[1]
    assert stored == f"{run.proxy_url.split('://')[1]}/cl/u/k/collect"
