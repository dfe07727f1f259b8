"""Server settings from command-line flags, each also an environment variable.

Every flag `--some-flag` can be given as `TAGPROXY_SOME_FLAG`; repeatable
flags take a comma-separated list there. Flags win over the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .clientip import Trust, parse_networks
from .errors import ConfigError
from .geo import GeoSource, geo_source
from .limits import Limits
from .privacy.consent import ConsentConfig, load_consent
from .rules import parse_duration, parse_size
from .rules.variables import RuleVariables, parse_rule_vars
from .site import OriginMatcher, Site, is_origin_pattern, parse_public_url
from .upstream import Override, parse_override

ENV_PREFIX: Final = "TAGPROXY_"
DEFAULT_LISTEN: Final = "127.0.0.1:8080"
DEFAULT_RULES: Final = "rules"
MAX_WORKERS: Final = 256
MIN_TRACE_SECRET: Final = 16
DEFAULT_SPOOL_MAX: Final = 256 * 1024 * 1024
DEFAULT_GRACE: Final = 10.0
DEFAULT_DELIVERY_CONCURRENCY: Final = 32


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def env_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_listen(raw: str, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{flag} {raw!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True)
class Durability:
    """The spool for durable routes, shutdown's grace period, DNS servers."""

    spool: Path | None = None
    spool_max_size: int = DEFAULT_SPOOL_MAX
    spool_sync: str = "normal"
    shutdown_grace: float = DEFAULT_GRACE
    dns_servers: tuple[str, ...] = ()
    delivery_concurrency: int = DEFAULT_DELIVERY_CONCURRENCY


def build_durability(
    *,
    spool: str | None = None,
    spool_max_size: str | None = None,
    spool_sync: str | None = None,
    shutdown_grace: str | None = None,
    dns_servers: Sequence[str] = (),
    delivery_concurrency: str | int | None = None,
) -> Durability:
    def fail(flag: str, raw: object) -> Callable[[str], ConfigError]:
        return lambda why: ConfigError(f"{flag} {raw!r}: {why}")

    sync = (spool_sync or "normal").lower()
    if sync not in ("normal", "full"):
        raise ConfigError(f"--spool-sync {spool_sync!r}: expected normal or full")
    max_size = DEFAULT_SPOOL_MAX
    if spool_max_size:
        max_size = parse_size(spool_max_size, fail("--spool-max-size", spool_max_size))
    grace = DEFAULT_GRACE
    if shutdown_grace:
        grace = parse_duration(shutdown_grace, fail("--shutdown-grace", shutdown_grace))
    concurrency = DEFAULT_DELIVERY_CONCURRENCY
    if delivery_concurrency is not None and delivery_concurrency != "":
        raw = str(delivery_concurrency)
        if not raw.isdigit() or not 1 <= int(raw) <= 4096:
            raise ConfigError(
                f"--delivery-concurrency {raw!r}: expected a whole number, 1 to 4096"
            )
        concurrency = int(raw)
    return Durability(
        spool=Path(spool) if spool else None,
        spool_max_size=max_size,
        spool_sync=sync,
        shutdown_grace=grace,
        dns_servers=tuple(parse_dns_server(d) for d in dns_servers),
        delivery_concurrency=concurrency,
    )


def parse_dns_server(raw: str) -> str:
    """`IP` or `IP:PORT` (`[IPv6]:PORT`), as c-ares takes it."""
    spec = raw.strip()
    host, port = spec, ""
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]")
        port = port.removeprefix(":")
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigError(
            f"--dns-server {raw!r}: expected an IP address with an optional "
            "port, e.g. 127.0.0.1:5353 or [::1]:53"
        )
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{port or 53}"


@dataclass(frozen=True, slots=True)
class Settings:
    rules: tuple[Path, ...] = (Path(DEFAULT_RULES),)
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    site: Site = field(default_factory=lambda: Site(None, None, OriginMatcher()))
    trust: Trust = field(default_factory=Trust)
    overrides: tuple[Override, ...] = ()
    geo: GeoSource = field(default_factory=GeoSource)
    consent: ConsentConfig | None = None  # how the site records consent
    log_format: str = "plain"
    log_level: str = "INFO"
    variables: RuleVariables = field(default_factory=RuleVariables)
    admin_listen: tuple[str, int] | None = None  # metrics, health, reload
    sites: Path | None = None  # the sites file; None: one site from flags
    trace_secret: str | None = None  # unlocks X-Tagproxy-Trace answers
    workers: int = 1
    durability: Durability = field(default_factory=Durability)
    tag_ids: tuple[str, ...] = ()  # VENDOR=ID, checked against the rules
    limits: Limits = field(default_factory=Limits)

    @property
    def listen_text(self) -> str:
        return address_text(self.listen)


def address_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_DOMAIN: Final = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]+")


def parse_cookie_domain(raw: str) -> str:
    """`shop.example` (a leading dot is allowed and dropped): a bare domain."""
    domain = raw.strip().lstrip(".").lower()
    if _DOMAIN.fullmatch(domain) is None:
        raise ConfigError(
            f"--cookie-domain {raw!r}: expected a bare domain such as "
            "shop.example (no scheme, port or path)"
        )
    return domain


def build_settings(
    *,
    rules: Sequence[str],
    listen: str,
    public_url: str | None,
    cookie_domain: str | None,
    allowed_origins: Sequence[str],
    trusted_proxies: Sequence[str],
    client_ip_headers: Sequence[str],
    overrides: Sequence[str],
    geo_header: str | None,
    log_format: str,
    log_level: str,
    rule_vars: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    consent: str | None = None,
    admin_listen: str | None = None,
    sites: str | None = None,
    trace_secret: str | None = None,
    workers: int = 1,
    durability: Durability | None = None,
    geo_country_header: str | None = None,
    geo_region_header: str | None = None,
    tag_ids: Sequence[str] = (),
    limits: Limits | None = None,
) -> Settings:
    """Validate raw option values into Settings, naming the option on error."""
    public = parse_public_url(public_url) if public_url else None
    domain = parse_cookie_domain(cookie_domain) if cookie_domain else None
    for origin in allowed_origins:
        if not is_origin_pattern(origin):
            raise ConfigError(
                f"--allowed-origin {origin!r}: expected an origin like "
                "https://www.shop.example or https://*.shop.example"
            )
    if log_format not in ("plain", "json"):
        raise ConfigError(f"--log-format {log_format!r}: expected plain or json")
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {workers}: expected 1 to {MAX_WORKERS}")
    if trace_secret is not None and len(trace_secret) < MIN_TRACE_SECRET:
        raise ConfigError(
            f"--trace-secret: use at least {MIN_TRACE_SECRET} characters, "
            "e.g. from `openssl rand -hex 16`"
        )
    return Settings(
        rules=tuple(Path(r) for r in rules),
        listen=parse_listen(listen),
        site=Site(
            public,
            domain,
            OriginMatcher(tuple(o.lower().rstrip("/") for o in allowed_origins)),
        ),
        trust=Trust(parse_networks(trusted_proxies), tuple(client_ip_headers)),
        overrides=tuple(parse_override(o) for o in overrides),
        geo=geo_source(geo_header, geo_country_header, geo_region_header),
        consent=load_consent(consent) if consent else None,
        log_format=log_format,
        log_level=log_level.upper(),
        variables=rule_variables(rule_vars, environ or {}),
        admin_listen=parse_listen(admin_listen, "--admin-listen")
        if admin_listen
        else None,
        sites=Path(sites) if sites else None,
        trace_secret=trace_secret or None,
        workers=workers,
        durability=durability or Durability(),
        tag_ids=tuple(tag_ids),
        limits=limits or Limits(),
    )


def rule_variables(specs: Sequence[str], environ: Mapping[str, str]) -> RuleVariables:
    """Values for rule variables: `--rule-var` flags, then TAGPROXY_* variables."""
    ours = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    return RuleVariables(parse_rule_vars(specs), ours)


def env_default(
    flag: str, default: str | None, environ: Mapping[str, str]
) -> str | None:
    return environ.get(env_name(flag), default)


def env_defaults(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Defaults for the serve flags, taken from TAGPROXY_* variables."""
    env = os.environ if environ is None else environ
    return {
        "rules": env_list(env.get(env_name("rules"))) or [DEFAULT_RULES],
        "listen": env.get(env_name("listen"), DEFAULT_LISTEN),
        "public_url": env.get(env_name("public-url")),
        "cookie_domain": env.get(env_name("cookie-domain")),
        "allowed_origin": env_list(env.get(env_name("allowed-origin"))),
        "trusted_proxy": env_list(env.get(env_name("trusted-proxy"))),
        "client_ip_header": env_list(env.get(env_name("client-ip-header"))),
        "upstream_override": env_list(env.get(env_name("upstream-override"))),
        "geo_header": env.get(env_name("geo-header")),
        "consent": env.get(env_name("consent")),
        "geo_country_header": env.get(env_name("geo-country-header")),
        "geo_region_header": env.get(env_name("geo-region-header")),
        "tag_id": env_list(env.get(env_name("tag-id"))),
        "max_header_size": env.get(env_name("max-header-size"), "16384"),
        "max_headers": env.get(env_name("max-headers"), "100"),
        "client_timeout": env.get(env_name("client-timeout"), "20"),
        "body_timeout": env.get(env_name("body-timeout"), "60"),
        "max_connections": env.get(env_name("max-connections"), "10000"),
        "log_format": env.get(env_name("log-format"), "plain"),
        "log_level": env.get(env_name("log-level"), "INFO"),
        "rule_var": env_list(env.get(env_name("rule-var"))),
        "admin_listen": env.get(env_name("admin-listen")),
        "sites": env.get(env_name("sites")),
        "trace_secret": env.get(env_name("trace-secret")),
        "workers": env.get(env_name("workers"), "1"),
        "spool": env.get(env_name("spool")),
        "spool_max_size": env.get(env_name("spool-max-size")),
        "spool_sync": env.get(env_name("spool-sync")),
        "shutdown_grace": env.get(env_name("shutdown-grace")),
        "dns_server": env_list(env.get(env_name("dns-server"))),
        "delivery_concurrency": env.get(env_name("delivery-concurrency")),
    }
