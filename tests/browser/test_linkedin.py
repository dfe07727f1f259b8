"""LinkedIn Insight Tag in Chromium: the pixel, the gzip page data, a conversion."""

from __future__ import annotations

import base64
import gzip
import json

from .conftest import StartBrowser
from .harness import query_of, vendor_script

INSIGHT = "https://snap.licdn.com/li.lms-analytics/insight.min.js"
SNIPPET = """<script>
_linkedin_partner_id = "987654";
window._linkedin_data_partner_ids = window._linkedin_data_partner_ids || [];
window._linkedin_data_partner_ids.push(_linkedin_partner_id);
(function(l) {{ if (!l) {{ window.lintrk = function(a,b){{window.lintrk.q.push([a,b])}};
window.lintrk.q=[] }}
var s = document.getElementsByTagName("script")[0];
var b = document.createElement("script"); b.type = "text/javascript"; b.async = true;
b.src = "{src}"; s.parentNode.insertBefore(b, s);}})(window.lintrk);
window.lintrk("track", {{conversion_id: 13579}});
</script>"""


async def test_linkedin_insight(browser_run: StartBrowser) -> None:
    run = await browser_run()
    run.serve_vendor(INSIGHT, vendor_script("linkedin_insight.js"))
    src = run.tag_url(INSIGHT)
    assert src == f"{run.proxy_url}/li/li.lms-analytics/insight.min.js"

    await run.open(SNIPPET.format(src=src), cookies={"li_fat_id": "fat-abc"})
    pixels = await run.beacons("px.ads.linkedin.com", "/collect", count=2)
    page_data = await run.beacon("px.ads.linkedin.com", "/wa/")

    queries = [query_of(p) for p in pixels]
    assert {q["pid"] for q in queries} == {"987654"}
    assert sorted(q.get("conversionId", "-") for q in queries) == ["-", "13579"]
    assert page_data.method == "POST"
    assert page_data.query == "medium=fetch&fmt=g"
    data = json.loads(gzip.decompress(base64.b64decode(page_data.body)))
    assert data["pids"] == [987654]
    assert data["liFatId"] == "fat-abc"
    assert data["url"] == f"{run.site_url}/"
    for beacon in [*pixels, page_data]:
        run.assert_visitor(beacon, cookies=[])
    run.assert_only_first_party()
    run.assert_no_errors()
