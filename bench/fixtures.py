"""The bench's own vendor: a rule, a script, beacons and the upstream sink.

All of it is made up here. The script has the size and the compressibility
of a real tag manager container (about 300 KB, about 90 KB gzipped), not its
code; the beacons carry a browser's usual headers, a 1 KB query or a 2 KB
body.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Final

from harness import Load

HOST: Final = "tags.bench.example"
MOUNT: Final = "/bn"
SCRIPT_PATH: Final = "/t.js"
BEACON_PATH: Final = "/collect"
SCRIPT_SIZE: Final = 300 * 1024

RULE: Final = f"""\
vendor = "bench"
name = "Benchmark vendor"
mount = "{MOUNT}"

[[hosts]]
host = "{HOST}"
path = ""

[[scripts]]
host = "{HOST}"
paths = ["{SCRIPT_PATH}"]
cache = "shared"
ttl = "1h"

[[relays]]
host = "{HOST}"
paths = ["{BEACON_PATH}"]
methods = ["GET", "POST"]
max_body = "64KiB"

[request]
cookies = ["_bn_id", "_bn_ses_*"]
client_ip = [{{ header = "X-Forwarded-For" }}]
"""

# Another vendor, numbered: loaded only to make the rule set large.
_FILLER_RULE: Final = """\
vendor = "filler{n}"
name = "Filler vendor {n}"
mount = "/f{n}"

[[hosts]]
host = "api.filler{n}.example"
path = ""

[[hosts]]
host = "*.cdn.filler{n}.example"
path = "/cdn"

[[scripts]]
host = "*.cdn.filler{n}.example"
paths = ["/lib/*.js", "/sdk.js"]
cache = "shared"
ttl = "1h"

[[relays]]
host = "api.filler{n}.example"
paths = ["/v1/**", "/track"]
methods = ["GET", "POST"]
max_body = "1MiB"

[request]
cookies = ["_f{n}_id", "_f{n}_*"]
client_ip = [{{ header = "X-Forwarded-For" }}]
"""


def write_rules(directory: Path, count: int) -> Path:
    """The bench rule plus `count - 1` other vendors, one file each."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.toml").write_text(RULE)
    for n in range(1, count):
        (directory / f"filler{n:03}.toml").write_text(_FILLER_RULE.format(n=n))
    return directory


def overrides(sink_url: str, count: int = 1) -> list[str]:
    """Every vendor host of `write_rules(count)` sent to the local sink."""
    found = [f"https://{HOST}={sink_url}"]
    for n in range(1, count):
        found.append(f"https://api.filler{n}.example={sink_url}")
        found.append(f"https://*.cdn.filler{n}.example={sink_url}")
    return found


def make_script(size: int = SCRIPT_SIZE) -> bytes:
    """A script of `size` bytes that gzips to roughly 30% of it, like real ones.

    Seeded, so every run (and every server in a run) gets the same bytes.
    """
    rng = random.Random(20261204)
    words = ["function", "return", "var", "this", "typeof", "window", "document"]
    parts: list[str] = [f'var __bn={{"endpoint":"https://{HOST}{BEACON_PATH}"}};\n']
    total = len(parts[0])
    n = 0
    while total < size:
        name = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6))
        number = rng.randrange(10**9)
        word = rng.choice(words)
        text = rng.randbytes(6).hex()
        line = (
            f"function {name}{n}(a,b){{var c=a.{word}||{number};"
            f'if(b)return c+"{text}";return c*{n % 97}}}\n'
        )
        if n % 200 == 0:
            line += f'var u{n}="https://{HOST}{BEACON_PATH}?v={n}";\n'
        parts.append(line)
        total += len(line)
        n += 1
    return "".join(parts).encode()[:size]


# --- beacons -----------------------------------------------------------------

BROWSER_HEADERS: Final = (
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    ("Accept", "*/*"),
    ("Accept-Language", "en-GB,en;q=0.7,de;q=0.3"),
    ("Referer", "https://www.shop.example/products/42?utm_source=news"),
    ("Origin", "https://www.shop.example"),
    ("Sec-Fetch-Dest", "empty"),
    ("Sec-Fetch-Mode", "no-cors"),
    ("Sec-Fetch-Site", "same-site"),
    (
        "Cookie",
        "_bn_id=GA1.2.1234567890.1700000000; _bn_ses_1=1; "
        "PHPSESSID=0123456789abcdef; cart=3",
    ),
)


def _query(size: int) -> str:
    pieces = ["v=2", "tid=BN-12345", "cid=1234567890.1700000000", "en=page_view"]
    n = 0
    while len("&".join(pieces)) < size:
        pieces.append(f"ep.item_{n}=value%20{n:04}")
        n += 1
    return "&".join(pieces)[:size]


def beacon_get(prefix: str = MOUNT) -> Load:
    """A pixel-style GET beacon with a 1 KB query."""
    return Load(f"{prefix}{BEACON_PATH}?{_query(1024)}", BROWSER_HEADERS)


def beacon_post(prefix: str = MOUNT) -> Load:
    """A sendBeacon-style POST with a 2 KB text/plain body."""
    body = ('{"events":[' + ",".join(['{"n":"click","p":{"x":1}}'] * 200))[:2047]
    return Load(
        f"{prefix}{BEACON_PATH}?v=2",
        (*BROWSER_HEADERS, ("Content-Type", "text/plain;charset=UTF-8")),
        method="POST",
        body=(body + "}").encode(),
    )


def script_load(prefix: str = MOUNT) -> Load:
    """A browser fetching the cached script, accepting gzip."""
    return Load(
        f"{prefix}{SCRIPT_PATH}",
        (
            BROWSER_HEADERS[0],
            ("Accept", "*/*"),
            ("Accept-Encoding", "gzip"),
            ("Referer", "https://www.shop.example/"),
        ),
    )


# --- the upstream sink --------------------------------------------------------


def sink_block(port: int, root: Path) -> str:
    """nginx as the vendor: the script as a file, beacons answered with 200."""
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {root};
        location = {SCRIPT_PATH} {{ default_type application/javascript; }}
        location = {BEACON_PATH} {{
            default_type text/plain;
            # Read the whole body, as a vendor does, before answering.
            client_body_buffer_size 64k;
            return 200 "ok";
        }}
    }}
"""
