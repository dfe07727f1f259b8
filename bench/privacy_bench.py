"""Privacy on the relay path: what consent gating and scrubbing cost a beacon.

Run: .venv/bin/python bench/privacy_bench.py [--duration S] [--rounds N]

Three tagproxy processes relay the same GET beacon (1 KB query, browser
headers) to the local sink, measured round by round, back to back:

- no privacy work: the bench rule says `purpose = "none"`, so it has no
  plan and a request pays one dict miss;
- defaults: the bench rule as it is, with no [privacy] section (gated as
  advertising: a Sec-GPC check per beacon);
- full: a OneTrust consent cookie read and matched, the page URL parsed
  and checked for e-mail addresses and phone numbers, identifiers listed
  for strip, the address truncated, `_bn_id` re-issued as a server cookie.
"""

from __future__ import annotations

from pathlib import Path

import fixtures
from harness import (
    Load,
    Options,
    ratio,
    rounds,
    run_reports,
    running,
    start_tagproxy,
    table,
    verdict,
)
from script_bench import Report, start_sink

CONNECTIONS = 50

NO_WORK = '\n[privacy]\npurpose = "none"\n'
FULL = """
[privacy]
purpose = "analytics"
ip = "truncate"

[privacy.strip]
query = ["cid", "uid"]

[privacy.query]
urls = ["dl", "dr"]

[privacy.cookies]
reissue = ["_bn_id"]
"""
ONETRUST = (
    "OptanonConsent=isGpcEnabled=0&datestamp=Mon+Jan+01+2024&version=202401.1.0"
    "&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A1%2CC0004%3A0"
)


def _rules(scratch: Path, name: str, extra: str) -> Path:
    directory = scratch / f"rules-{name}"
    directory.mkdir()
    (directory / "bench.toml").write_text(fixtures.RULE + extra)
    return directory


def full_load() -> Load:
    """The bench beacon with a page URL to check and a consent cookie to read."""
    base = fixtures.beacon_get()
    page = "dl=https%3A%2F%2Fwww.shop.example%2Fproducts%2F42%3Futm_source%3Dnews"
    path, _, query = base.path.partition("?")
    headers = tuple(
        (k, f"{v}; {ONETRUST}") if k == "Cookie" else (k, v) for k, v in base.headers
    )
    return Load(f"{path}?{page}&{query}"[: len(base.path)], headers)


def bench(opts: Options, scratch: Path) -> list[Report]:
    sink = start_sink(scratch)
    overrides = fixtures.overrides(sink.url)
    with running(sink):
        servers = [
            start_tagproxy(
                "tagproxy, no privacy work",
                scratch,
                [_rules(scratch, "none", NO_WORK)],
                overrides,
            ),
            start_tagproxy(
                "tagproxy, rule without [privacy]",
                scratch,
                [_rules(scratch, "default", "")],
                overrides,
            ),
            start_tagproxy(
                "tagproxy, consent + scrub + cookies",
                scratch,
                [_rules(scratch, "full", FULL)],
                overrides,
                extra=["--consent", "onetrust"],
            ),
        ]
        with running(*servers):
            plain = fixtures.beacon_get()
            loads = [plain, plain, full_load()]
            none, default, full = rounds(
                list(zip(servers, loads, strict=True)), CONNECTIONS, opts, scratch
            )
            default_share = ratio(default, none)
            full_share = ratio(full, none)
            cpu = full.median("cpu_us") - none.median("cpu_us")
            return [
                Report(
                    f"privacy on the relay, GET beacon, {CONNECTIONS} connections",
                    table([none, default, full]),
                    [
                        verdict(
                            "rule without [privacy] / no privacy work",
                            default_share,
                            ">= 0.97",
                            default_share >= 0.97,
                        ),
                        verdict(
                            "consent + scrub + cookies / no privacy work",
                            full_share,
                            ">= 0.90",
                            full_share >= 0.90,
                        ),
                        f"  full privacy work adds {cpu:.1f} us of CPU per beacon",
                    ],
                )
            ]


def main() -> None:
    run_reports(__doc__, bench)


if __name__ == "__main__":
    main()
