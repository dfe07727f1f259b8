"""A container health check with nothing but Python: GET the admin /healthz.

    python -m proxy.healthcheck [HOST:PORT]

The address defaults to TAGPROXY_ADMIN_LISTEN, the variable `tagproxy serve`
reads for its admin listener; a wildcard host (0.0.0.0, ::) is asked on
loopback. Exits 0 when /healthz answers 200 within the timeout, else 1 with
the reason on stderr. Slim base images have no curl or wget, and a shell
one-liner would not say why a check failed.
"""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Sequence
from typing import Final

from .config import env_name, parse_listen

TIMEOUT: Final = 3.0
PATH: Final = "/healthz"
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def admin_address(argv: Sequence[str], environ: dict[str, str]) -> tuple[str, int]:
    raw = argv[0] if argv else environ.get(env_name("admin-listen"), "")
    if not raw:
        raise ValueError(
            f"no admin address: set {env_name('admin-listen')} (as for "
            "`tagproxy serve`) or pass HOST:PORT"
        )
    host, port = parse_listen(raw)
    return _WILDCARDS.get(host, host), port


def check(host: str, port: int, timeout: float = TIMEOUT) -> str | None:
    """None when healthy, else why not."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", PATH, headers={"User-Agent": "tagproxy-healthcheck"})
        answer = connection.getresponse()
        answer.read()
    except OSError as exc:
        return f"cannot reach http://{host}:{port}{PATH}: {exc}"
    finally:
        connection.close()
    if answer.status != 200:
        return f"http://{host}:{port}{PATH} answered {answer.status}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        host, port = admin_address(args, dict(os.environ))
    except ValueError as exc:
        print(f"tagproxy healthcheck: {exc}", file=sys.stderr)
        return 1
    problem = check(host, port)
    if problem is not None:
        print(f"tagproxy healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
