"""Hotjar in Chromium: bootstrap, modules and frame first-party, HTTP beacons,
and the live WebSocket relayed message by message to the fake vendor.

The frame host and the WebSocket host are glued at run time from a bare
default, so they reach tagproxy only through the runtime shim.
"""

from __future__ import annotations

import base64
import gzip
import json

from aiohttp import WSMsgType

from ..fakes import Message, SocketEndpoint
from .conftest import StartBrowser
from .harness import query_of, vendor_script

SITE_ID = "3210987"
BOOTSTRAP = f"https://static.hotjar.com/c/hotjar-{SITE_ID}.js"
MODULES = "https://script.hotjar.com/modules.8c1d2e44.js"
VARS = "https://vars.hotjar.com/box-5d7e1a.html"
# The tracking code as a site pastes it, with the script base replaced by
# what `tagproxy url` prints.
SNIPPET = """<script>
(function(h,o,t,j,a,r){{
  h.hj=h.hj||function(){{(h.hj.q=h.hj.q||[]).push(arguments)}};
  h._hjSettings={{hjid:{site},hjsv:6}};
  a=o.getElementsByTagName('head')[0];
  r=o.createElement('script');r.async=1;
  r.src=t+h._hjSettings.hjid+j+h._hjSettings.hjsv;
  a.appendChild(r);
}})(window,document,'{base}','.js?sv=');
hj('event', 'signup');
</script>"""
# What the visitor's browser remembers from an earlier visit.
USER = base64.b64encode(b'{"id":"u-earlier-visit"}').decode()


def live_channel(message: Message) -> list[Message]:
    """Hotjar-like server side: acknowledge each recording chunk."""
    kind, _ = message
    if kind is WSMsgType.BINARY:
        return [(WSMsgType.TEXT, b'{"type":"ack","seq":1}')]
    return []


async def test_hotjar_first_party_with_its_websocket(
    browser_run: StartBrowser,
) -> None:
    run = await browser_run()
    run.serve_vendor(BOOTSTRAP, vendor_script("hotjar_bootstrap.js"))
    run.serve_vendor(MODULES, vendor_script("hotjar_modules.js"))
    run.serve_vendor(VARS, vendor_script("hotjar_vars.html"), "text/html")
    channel = SocketEndpoint(answer=live_channel)
    run.vendor.reply("ws.hotjar.com", "/api/v2/client/ws", channel)

    src = run.tag_url(f"{BOOTSTRAP}?sv=6")
    assert src == f"{run.proxy_url}/hj/c/hotjar-{SITE_ID}.js?sv=6"
    base = src.split(SITE_ID)[0]
    await run.open(
        SNIPPET.format(site=SITE_ID, base=base),
        cookies={f"_hjSessionUser_{SITE_ID}": USER},
    )

    # The live channel: hello (text), a gzip recording chunk (binary), the
    # acknowledgement of the server's answer, then a clean close.
    socket = await channel.socket()
    await socket.closed.wait()
    kinds = [kind for kind, _ in socket.messages]
    assert kinds == [WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.TEXT]
    hello = json.loads(socket.messages[0][1])
    assert hello["type"] == "hello"
    assert (hello["site_id"], hello["user_id"]) == (int(SITE_ID), "u-earlier-visit")
    chunk = json.loads(gzip.decompress(socket.messages[1][1]))
    assert chunk == [{"t": "mouse", "x": 10, "y": 20}, {"t": "scroll", "y": 300}]
    assert json.loads(socket.messages[2][1]) == {"type": "ack-seen", "seq": 1}
    assert (socket.close_code, socket.close_reason) == (1000, "page done")
    upgrade = socket.upgrade
    assert upgrade.host == "ws.hotjar.com"
    assert upgrade.raw_path == f"/api/v2/client/ws?v=6&site_id={SITE_ID}"
    assert upgrade.header("Origin") == run.site_url
    run.assert_visitor(upgrade, cookies=[])

    # HTTP beacons: visit data by XHR, page content as gzip by fetch, the
    # queued event by sendBeacon.
    visit = await run.beacon(
        "in.hotjar.com", f"/api/v2/client/sites/{SITE_ID}/visit-data"
    )
    assert query_of(visit) == {"sv": "6"}
    data = json.loads(visit.body)
    assert (data["user_id"], data["url"]) == ("u-earlier-visit", f"{run.site_url}/")
    content = await run.beacon("content.hotjar.io", "/")
    assert query_of(content) == {"site_id": SITE_ID, "gzip": "1"}
    assert b"<title>shop</title>" in gzip.decompress(content.body)
    event = await run.beacon("in.hotjar.com", f"/api/v2/client/sites/{SITE_ID}/events")
    assert json.loads(event.body) == {"user_id": "u-earlier-visit", "name": "signup"}
    for beacon in (visit, content, event):
        run.assert_visitor(beacon, cookies=[])

    # Bootstrap, modules and the frame came through tagproxy.
    fetched = {(r.host, r.raw_path) for r in run.vendor.received if r.method == "GET"}
    assert ("static.hotjar.com", f"/c/hotjar-{SITE_ID}.js?sv=6") in fetched
    assert ("script.hotjar.com", "/modules.8c1d2e44.js") in fetched
    assert ("vars.hotjar.com", "/box-5d7e1a.html") in fetched
    await run.settle()
    # The page opened its socket to tagproxy, the shim having mapped the
    # glued vendor host.
    sockets = [r.url for r in run.requests if r.resource_type == "websocket"]
    assert sockets == [
        f"wss://{run.proxy_url.split('://')[1]}/hj/ws/api/v2/client/ws"
        f"?v=6&site_id={SITE_ID}"
    ]
    run.assert_only_first_party()
    run.assert_no_errors()
