"""Time the script rewriter on a ~570 KB container-like script.

Run: .venv/bin/python bench/rewrite_bench.py

Prints the time per rewrite (one ``Rewriter.rewrite`` call), the whole cost
of a cache fill (the rewrite, then gzip and brotli compression and the ETag
hash, as ``proxy.scripts.make_script`` does once per cache entry), and the
ratio to a plain ``bytes.replace`` of the same hosts, all measured in this
run, so the numbers compare across machines. The script is generated here; it only
imitates the shape of a tag container (many functions, config blobs, regex
checks of the vendor's own URLs), not any vendor's code.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import tree_sitter_javascript
from multidict import CIMultiDict
from tree_sitter import Language, Parser

from proxy.rewrite import BodyKind, HostTarget, Rewriter
from proxy.rules import ScriptRoute, load_rules
from proxy.scripts import make_script

TARGET_SIZE: Final = 570 * 1024
ROUNDS: Final = 15
PUBLIC_BASE: Final = "https://metrics.shop.example"

TARGETS: Final = (
    HostTarget("www.googletagmanager.com", f"{PUBLIC_BASE}/gt/gtm"),
    HostTarget("www.google-analytics.com", f"{PUBLIC_BASE}/gt/ga/www"),
    HostTarget(
        "*.google-analytics.com",
        f"{PUBLIC_BASE}/gt/ga/{{label}}",
        label="region[0-9]+",
    ),
    HostTarget("stats.g.doubleclick.net", f"{PUBLIC_BASE}/gt/dc", bare=True),
)

# One chunk with vendor references, then plain code: a real container has a
# few hundred references in half a megabyte, not one in every line.
FILLER_PER_CHUNK: Final = 6

_CHUNK: Final = """\
var cfg{n}={{"tag":"G-BENCH{n}",
"endpoint":"https:\\/\\/www.google-analytics.com\\/g\\/collect",
"fallback":"//region{r}.google-analytics.com/g/collect",
"dc":"stats.g.doubleclick.net"}};
function send{n}(a,b){{var u="https://www.google-analytics.com/g/collect?tid="+a;
  // see https://www.googletagmanager.com/gtag/js for the loader
  if(/^https:\\/\\/www\\.googletagmanager\\.com\\//.test(b))return u+"&x="+b.length;
  var t=`https://www.googletagmanager.com/td?id=${{a}}&n={n}`;
  var m=["mail{n}@google-analytics.com","co.uk","com.au","example{n}.org"];
  for(var i=0;i<m.length;i++){{if(b.indexOf(m[i])>=0)return t}}
  return navigator.sendBeacon&&navigator.sendBeacon(u,b)}}
"""

_FILLER: Final = """\
var st{n}_{k}={{a:[],b:{{}},c:0}};function ev{n}_{k}(d,e){{if(!d||typeof d!=="object")
return!1;for(var f in d)if(Object.prototype.hasOwnProperty.call(d,f)){{var g=d[f];
st{n}_{k}.a.push([f,g]);st{n}_{k}.c+=String(g).length}}return e?e(st{n}_{k}):!0}}
"""


def build_script(size: int = TARGET_SIZE) -> bytes:
    """A container-like script of at least ``size`` bytes."""
    chunks = []
    total = n = 0
    while total < size:
        chunk = _CHUNK.format(n=n, r=n % 7)
        filler = (_FILLER.format(n=n, k=k) for k in range(FILLER_PER_CHUNK))
        encoded = (chunk + "".join(filler)).encode()
        chunks.append(encoded)
        total += len(encoded)
        n += 1
    return b"".join(chunks)


def plain_replace(body: bytes) -> bytes:
    """The naive baseline: replace every host everywhere, no parsing."""
    for target in TARGETS:
        if target.host.startswith("*."):
            continue
        prefix = target.base_url.partition("://")[2].encode()
        body = body.replace(target.host.encode(), prefix)
    return body


def best_of(action: Callable[[], object]) -> float:
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def script_route() -> ScriptRoute:
    """A real script route, as the loader builds it, for ``make_script``."""
    from fixtures import RULE

    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "bench.toml").write_text(RULE)
        return load_rules([Path(directory)]).rules[0].scripts[0]


def fill(rewriter: Rewriter, script: bytes, route: ScriptRoute) -> None:
    """What one cache miss costs after the download: rewrite, compress, hash."""
    result = rewriter.rewrite(script, BodyKind.JS)
    make_script(
        200,
        result.body,
        "application/javascript",
        route,
        CIMultiDict(),
        sum(result.replacements.values()),
        result.kept_original,
    )


def main() -> None:
    script = build_script()
    rewriter = Rewriter(TARGETS)
    result = rewriter.rewrite(script, BodyKind.JS)
    assert not result.kept_original, result.reason
    route = script_route()

    rewrite_s = best_of(lambda: rewriter.rewrite(script, BodyKind.JS))
    fill_s = best_of(lambda: fill(rewriter, script, route))
    replace_s = best_of(lambda: plain_replace(script))
    # The floor: the rewriter must parse the original once, whatever it does.
    language = Language(tree_sitter_javascript.language())
    parse_s = best_of(lambda: Parser(language).parse(script))
    print(f"script size:      {len(script) / 1024:.0f} KiB")
    print(f"replacements:     {sum(result.replacements.values())}")
    print(f"rewrite per fill: {rewrite_s * 1000:.1f} ms (median of {ROUNDS})")
    print(
        f"cost per fill:    {fill_s * 1000:.1f} ms (rewrite, gzip, brotli, ETag;"
        f" {1 / fill_s:.1f} fills/s per core)"
    )
    print(f"bytes.replace:    {replace_s * 1000:.2f} ms")
    print(f"one parse alone:  {parse_s * 1000:.1f} ms (tree-sitter, same script)")
    print(f"ratio:            {rewrite_s / replace_s:.0f}x")


if __name__ == "__main__":
    main()
