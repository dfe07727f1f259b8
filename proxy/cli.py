"""The `tagproxy` command: serve, check, routes, url and rewrite."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yarl import URL

from . import __version__
from .config import (
    DEFAULT_LISTEN,
    Settings,
    build_durability,
    build_settings,
    env_defaults,
    env_name,
    parse_cookie_domain,
    rule_variables,
)
from .errors import ConfigError
from .limits import build_limits
from .logs import setup_logging
from .privacy import load_consent
from .privacy.audit import audit, render_json, render_summary, render_text
from .reload import load_config
from .rewrite import BodyKind, kind_for_content_type
from .routing import Router
from .rules import RelayRoute, RuleSet, ScriptRoute, load_rules
from .rules.loader import RuleError, load_rule, rule_files
from .rules.variables import RuleVariables, Variable
from .runtime import run
from .scripts import build_rewriter
from .site import parse_public_url
from .sites import SiteConfig, load_sites, log_sites
from .workers import supervise

log = logging.getLogger("tagproxy")

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"tagproxy: {exc}", file=sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    env = env_defaults()
    parser = argparse.ArgumentParser(
        prog="tagproxy",
        description="Serve vendor tags from your own domain and relay their beacons.",
        epilog="Every serve flag can also be set as TAGPROXY_<FLAG>.",
    )
    parser.add_argument(
        "--version", action="version", version=f"tagproxy {__version__}"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy")
    _rules_flag(serve, env)
    serve.add_argument(
        "--listen",
        default=env["listen"],
        metavar="HOST:PORT",
        help=f"where to listen (default {DEFAULT_LISTEN})",
    )
    _public_url_flag(serve, env, default=None)
    serve.add_argument(
        "--cookie-domain",
        default=env["cookie_domain"],
        metavar="DOMAIN",
        help="Domain for cookies vendors set, e.g. shop.example "
        "(default: host-only cookies)",
    )
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="origin allowed to call relays "
        "cross-origin, e.g. https://www.shop.example or "
        "https://*.shop.example (repeatable; default: the public "
        "URL's origin and origins under the cookie domain)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="CIDR",
        help="a proxy or load balancer whose "
        "X-Forwarded-* headers are believed (repeatable)",
    )
    serve.add_argument(
        "--client-ip-header",
        action="append",
        default=None,
        metavar="NAME",
        help="single-address header set by a trusted "
        "proxy, e.g. CF-Connecting-IP (repeatable)",
    )
    serve.add_argument(
        "--upstream-override",
        action="append",
        default=None,
        metavar="ORIGIN=URL",
        help="send a vendor origin to another "
        "base URL, keeping its Host, e.g. "
        "'https://*.google-analytics.com=http://127.0.0.1:9000' "
        "(repeatable; for staging and tests)",
    )
    serve.add_argument(
        "--geo-header",
        default=env["geo_header"],
        metavar="NAME",
        help="trusted header holding the visitor's COUNTRY-REGION, "
        "used for scripts cached per geo and for rules' geo_headers",
    )
    _operations_flags(serve, env)
    _consent_flag(serve, env)
    _security_flags(serve, env)
    serve.add_argument(
        "--log-format", choices=("plain", "json"), default=env["log_format"]
    )
    serve.add_argument(
        "--log-level",
        default=env["log_level"],
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
    )
    _durability_flags(serve, env)
    serve.set_defaults(run=_serve, env=env)

    check = commands.add_parser("check", help="validate rule files; exit 1 on error")
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="rule files or directories (default: the rules directory)",
    )
    _rule_var_flag(check)
    check.add_argument(
        "--sites",
        type=Path,
        default=env["sites"],
        metavar="FILE",
        help="also validate this sites file against the rules",
    )
    check.set_defaults(run=_check, env=env)

    routes = commands.add_parser("routes", help="list first-party paths and upstreams")
    _rules_flag(routes, env)
    routes.set_defaults(run=_routes)

    audit = commands.add_parser(
        "audit",
        help="per vendor: what leaves the site for which hosts, in what form, "
        "under which consent, and which cookies tagproxy sets",
    )
    _rules_flag(audit, env)
    _consent_flag(audit, env)
    audit.add_argument(
        "--cookie-domain",
        default=env["cookie_domain"],
        metavar="DOMAIN",
        help="the site's cookie domain, as given to serve",
    )
    audit.add_argument(
        "--sites",
        default=env["sites"],
        metavar="FILE",
        help="the sites file given to serve, for --site",
    )
    audit.add_argument(
        "--site",
        metavar="NAME",
        help="audit one site of the sites file: its vendors, cookie domain "
        "and consent settings",
    )
    shape = audit.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print JSON")
    shape.add_argument(
        "--summary", action="store_true", help="print a Markdown table, one row a gate"
    )
    audit.set_defaults(run=_audit)

    url = commands.add_parser(
        "url", help="the first-party URL to use instead of a vendor URL in a script src"
    )
    url.add_argument("vendor_url", metavar="VENDOR_URL")
    _rules_flag(url, env)
    _public_url_flag(url, env, default=DEFAULT_PUBLIC_URL)
    url.set_defaults(run=_url)

    rewrite = commands.add_parser(
        "rewrite", help="rewrite a saved vendor script to stdout, without a server"
    )
    rewrite.add_argument("file", type=Path, metavar="FILE")
    rewrite.add_argument(
        "--from",
        dest="from_url",
        required=True,
        metavar="VENDOR_URL",
        help="the URL the file was fetched from",
    )
    rewrite.add_argument(
        "--kind",
        choices=[k.value for k in BodyKind],
        default=None,
        help="body kind (default: from the file name)",
    )
    _rules_flag(rewrite, env)
    _public_url_flag(rewrite, env, default=DEFAULT_PUBLIC_URL)
    rewrite.set_defaults(run=_rewrite)
    return parser


def _operations_flags(parser: argparse.ArgumentParser, env: dict[str, Any]) -> None:
    parser.add_argument(
        "--admin-listen",
        default=env["admin_listen"],
        metavar="HOST:PORT",
        help="where to serve /metrics, /healthz, /readyz and POST /reload, "
        "e.g. 127.0.0.1:9090 (default: not served); never the public port",
    )
    parser.add_argument(
        "--sites",
        default=env["sites"],
        metavar="FILE",
        help="TOML file mapping Host to public URL, cookie domain, origins "
        "and vendors (default: one site from the flags)",
    )
    parser.add_argument(
        "--trace-secret",
        default=env["trace_secret"],
        metavar="SECRET",
        help="requests with X-Tagproxy-Trace: SECRET get what was relayed "
        "in an X-Tagproxy-Trace response header (prefer the environment "
        "variable: flags show in ps)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=env["workers"],
        metavar="N",
        help="serving processes sharing the port (default 1)",
    )


def _rules_flag(parser: argparse.ArgumentParser, env: dict[str, Any]) -> None:
    parser.add_argument(
        "--rules",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"rule directory or file (repeatable; default: {', '.join(env['rules'])})",
    )
    parser.set_defaults(default_rules=[Path(r) for r in env["rules"]], env=env)
    _rule_var_flag(parser)


def _consent_flag(parser: argparse.ArgumentParser, env: dict[str, Any]) -> None:
    parser.add_argument(
        "--consent",
        default=env["consent"],
        metavar="PRESET|FILE",
        help="how the site records consent: a preset (cookiebot, complianz, "
        "cookieyes, onetrust) or a TOML file; see docs/privacy.md "
        "(default: no consent cookie is read)",
    )


def _rule_var_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rule-var",
        action="append",
        default=None,
        metavar="VENDOR.NAME=VALUE",
        help="set a variable a rule declares, e.g. matomo.host=analytics.shop.example "
        "(repeatable; also TAGPROXY_<VENDOR>_<NAME>)",
    )


def _variables(args: argparse.Namespace) -> RuleVariables:
    return rule_variables(args.rule_var or args.env["rule_var"], os.environ)


def _public_url_flag(
    parser: argparse.ArgumentParser, env: dict[str, Any], default: str | None
) -> None:
    parser.add_argument(
        "--public-url",
        default=env["public_url"] or default,
        metavar="URL",
        help="where browsers reach tagproxy, e.g. "
        "https://metrics.shop.example"
        + (
            f" (default {default})"
            if default
            else " (default: from each request's Host)"
        ),
    )


def _durability_flags(parser: argparse.ArgumentParser, env: dict[str, Any]) -> None:
    parser.add_argument(
        "--spool",
        default=env["spool"],
        metavar="PATH",
        help="SQLite file that keeps beacons of durable routes until delivered "
        "(required when a rule has a durable route)",
    )
    parser.add_argument(
        "--spool-max-size",
        default=env["spool_max_size"],
        metavar="SIZE",
        help="most beacon data the spool holds, e.g. 256MiB (the default); "
        "when full, durable routes relay live",
    )
    parser.add_argument(
        "--spool-sync",
        default=env["spool_sync"],
        choices=("normal", "full"),
        help="normal (default): beacons survive a crash of tagproxy; full: "
        "also a power cut, at the cost of a disk flush per commit",
    )
    parser.add_argument(
        "--shutdown-grace",
        default=env["shutdown_grace"],
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may take to finish (default 10s)",
    )
    parser.add_argument(
        "--delivery-concurrency",
        default=env["delivery_concurrency"],
        metavar="N",
        help="spooled beacons sent at once (default 32); also the most that "
        "can be sent twice after a crash",
    )
    parser.add_argument(
        "--dns-server",
        action="append",
        default=None,
        metavar="IP[:PORT]",
        help="resolve vendor hosts with this DNS server instead of the "
        "system's (repeatable)",
    )


def _security_flags(parser: argparse.ArgumentParser, env: dict[str, Any]) -> None:
    group = parser.add_argument_group("location, tag IDs and limits")
    group.add_argument(
        "--geo-country-header",
        default=env["geo_country_header"],
        metavar="NAME",
        help="trusted header holding the visitor's country, e.g. CF-IPCountry",
    )
    group.add_argument(
        "--geo-region-header",
        default=env["geo_region_header"],
        metavar="NAME",
        help="trusted header holding the visitor's region, e.g. cf-region-code",
    )
    group.add_argument(
        "--tag-id",
        action="append",
        default=None,
        metavar="VENDOR=ID",
        help="a tag, pixel or container ID this site serves, e.g. google=G-ABC123 "
        "(repeatable; once a vendor has any, requests naming others get 403)",
    )
    limits = (
        ("--max-header-size", int, "bytes in one header or the request line"),
        ("--max-headers", int, "headers in one request"),
        (
            "--client-timeout",
            float,
            "seconds to send a request head, and "
            "the longest a kept-alive connection may idle",
        ),
        ("--body-timeout", float, "seconds to send a request body"),
        ("--max-connections", int, "open connections; past it, 503"),
    )
    for flag, kind, text in limits:
        key = flag.lstrip("-").replace("-", "_")
        group.add_argument(
            flag, type=kind, default=env[key], help=f"{text} (default {env[key]})"
        )


def _rule_paths(args: argparse.Namespace) -> list[Path]:
    return list(args.rules or args.default_rules)


# --- serve -------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    env = args.env
    settings = build_settings(
        rules=[str(p) for p in _rule_paths(args)],
        listen=args.listen,
        public_url=args.public_url,
        cookie_domain=args.cookie_domain,
        allowed_origins=args.allowed_origin or env["allowed_origin"],
        trusted_proxies=args.trusted_proxy or env["trusted_proxy"],
        client_ip_headers=args.client_ip_header or env["client_ip_header"],
        overrides=args.upstream_override or env["upstream_override"],
        geo_header=args.geo_header,
        log_format=args.log_format,
        log_level=args.log_level,
        rule_vars=args.rule_var or env["rule_var"],
        environ=os.environ,
        consent=args.consent,
        admin_listen=args.admin_listen,
        sites=args.sites,
        trace_secret=args.trace_secret,
        workers=args.workers,
        durability=build_durability(
            spool=args.spool,
            spool_max_size=args.spool_max_size,
            spool_sync=args.spool_sync,
            shutdown_grace=args.shutdown_grace,
            dns_servers=args.dns_server or env["dns_server"],
            delivery_concurrency=args.delivery_concurrency,
        ),
        geo_country_header=args.geo_country_header,
        geo_region_header=args.geo_region_header,
        tag_ids=args.tag_id or env["tag_id"],
        limits=build_limits(
            max_header_size=args.max_header_size,
            max_headers=args.max_headers,
            client_timeout=args.client_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        ),
    )
    setup_logging(settings)
    loaded = load_config(settings)
    _log_startup(settings, loaded.rules)
    log_sites(loaded.sites)
    if settings.workers > 1:
        supervise(settings, loaded)
    else:
        run(settings, loaded)
    return 0


def _log_startup(settings: Settings, rules: RuleSet) -> None:
    for rule in rules.rules:
        log.info(
            "rule %s (%s) at %s: %d script, %d relay routes, hosts %s",
            rule.vendor,
            rule.source,
            rule.mount,
            len(rule.scripts),
            len(rule.relays),
            ", ".join(h.host for h in rule.hosts),
        )
        for variable in rule.variables:
            log.info("rule variable %s", _describe(variable))
    for override in settings.overrides:
        log.info(
            "upstream override: %s://%s -> %s",
            override.scheme,
            override.host_pattern,
            override.base,
        )
    if settings.site.public_url is None and settings.sites is None:
        # Every Host a client invents is then its own cache key and its own
        # vendor fetch: fine on a laptop, a cache-thrashing lever in production.
        log.warning(
            "public URL: taken from each request's Host; set --public-url "
            "(or --sites) in production so clients cannot multiply cache "
            "entries and vendor fetches by inventing Host values"
        )
    elif settings.site.public_url is None:
        log.info("public URL: per site, from the sites file")
    else:
        log.info("public URL: %s", settings.site.public_url)
    if not settings.trust.proxies:
        log.info("no trusted proxies: X-Forwarded-For from clients is ignored")


# --- check, routes, url, rewrite ---------------------------------------------


def _check(args: argparse.Namespace) -> int:
    paths = args.paths or [Path(r) for r in args.env["rules"]]
    try:
        files = rule_files(paths)
    except RuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = 0
    rules = []
    try:
        variables = _variables(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for file in files:
        try:
            rules.append(load_rule(file, variables))
            print(f"ok: {file}")
        except RuleError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    if not failed:
        from .rules.loader import build_rule_set

        try:
            rule_set = build_rule_set(rules)
            variables.check_all_declared(v for r in rules for v in r.variables)
            if args.sites:
                sites = load_sites(args.sites, rule_set)
                print(f"ok: {args.sites} ({len(sites.sites)} sites)")
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if not files:
        print("error: no rule files found", file=sys.stderr)
        return 1
    print(f"{len(files) - failed} of {len(files)} rule files valid")
    return 1 if failed else 0


def _audit(args: argparse.Namespace) -> int:
    rules = load_rules(_rule_paths(args), _variables(args))
    consent = load_consent(args.consent) if args.consent else None
    domain = parse_cookie_domain(args.cookie_domain) if args.cookie_domain else None
    vendors = None
    if args.site:
        site = _named_site(args, rules)
        vendors, domain = site.vendors, site.site.cookie_domain
        consent = site.consent or consent
    reports = audit(rules, consent, domain, vendors)
    render = render_json if args.json else render_text
    sys.stdout.write((render_summary if args.summary else render)(reports))
    return 0


def _named_site(args: argparse.Namespace, rules: RuleSet) -> SiteConfig:
    if not args.sites:
        raise ConfigError("--site needs the sites file: --sites FILE")
    sites = load_sites(Path(args.sites), rules)
    for site in sites.sites:
        if site.name == args.site:
            return site
    names = ", ".join(s.name for s in sites.sites)
    raise ConfigError(f"--site {args.site!r}: no such site in {args.sites} ({names})")


def _routes(args: argparse.Namespace) -> int:
    rules = load_rules(_rule_paths(args), _variables(args))
    rows = [("VENDOR", "FIRST-PARTY PATH", "UPSTREAM", "KIND", "DETAIL")]
    for rule in rules.rules:
        routes: list[ScriptRoute | RelayRoute] = [*rule.scripts, *rule.relays]
        for route in routes:
            host = route.host
            label = "/<label>" if host.is_pattern else ""
            for path in route.paths.patterns:
                first_party = f"{rule.mount}{host.prefix}{label}{path}"
                scheme = host.scheme
                if isinstance(route, RelayRoute) and route.websocket is not None:
                    scheme = "wss" if scheme == "https" else "ws"
                upstream = f"{scheme}://{host.host}{path}"
                rows.append(
                    (
                        rule.vendor,
                        first_party,
                        upstream,
                        route.kind,
                        _route_detail(route),
                    )
                )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )
    variables = [v for rule in rules.rules for v in rule.variables]
    if variables:
        print("\nRule variables:")
        for variable in variables:
            print(f"  {_describe(variable)}")
    return 0


def _describe(variable: Variable) -> str:
    """`matomo.host = x (default; set TAGPROXY_MATOMO_HOST or --rule-var ...)`."""
    if variable.is_default:
        where = f"default; set {variable.env_name} or --rule-var {variable.key}=..."
    else:
        where = f"from {variable.origin}"
    about = f": {variable.help}" if variable.help else ""
    return f"{variable.key} = {variable.value!r} ({where}){about}"


def _route_detail(route: ScriptRoute | RelayRoute) -> str:
    if isinstance(route, ScriptRoute):
        return f"cache={route.cache.value} ttl={route.ttl:g}s"
    if route.websocket is not None:
        limits = route.websocket
        return (
            f"max_message={limits.max_message} idle_timeout={limits.idle_timeout:g}s "
            f"max_connections={limits.max_connections}"
        )
    methods = ",".join(sorted(route.methods - {"OPTIONS"}))
    detail = f"methods={methods} max_body={route.max_body}"
    if route.durable is not None:
        detail += f" durable max_age={route.durable.max_age:g}s"
    return detail


def _vendor_url(raw: str) -> URL | None:
    """A script src as pages write it: absolute, or protocol-relative (https)."""
    text = raw.strip()
    if text.startswith("//"):
        text = "https:" + text
    try:
        url = URL(text)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        print(
            f"tagproxy: {raw!r} must be an absolute URL, "
            "e.g. https://plausible.io/js/script.js",
            file=sys.stderr,
        )
        return None
    return url


def _not_served(url: URL) -> int:
    where = url.host if url.is_default_port() else f"{url.host}:{url.port}"
    print(f"tagproxy: no loaded rule serves {where}", file=sys.stderr)
    return 1


def _url(args: argparse.Namespace) -> int:
    rules = load_rules(_rule_paths(args), _variables(args))
    public_url = parse_public_url(args.public_url)
    vendor_url = _vendor_url(args.vendor_url)
    if vendor_url is None:
        return 1
    first_party = Router(rules).first_party_url(public_url, vendor_url)
    if first_party is None or not vendor_url.is_default_port():
        return _not_served(vendor_url)
    try:
        Router(rules).match(first_party[len(str(public_url).rstrip("/")) :])
    except Exception:
        print(
            "tagproxy: warning: the rule names this host but no route covers "
            "this path; requests to it will get 404",
            file=sys.stderr,
        )
    print(first_party)
    return 0


def _rewrite(args: argparse.Namespace) -> int:
    rules = load_rules(_rule_paths(args), _variables(args))
    public_url = parse_public_url(args.public_url)
    vendor_url = _vendor_url(args.from_url)
    if vendor_url is None:
        return 1
    owner = rules.owner_of(vendor_url.host or "")
    if owner is None:
        return _not_served(vendor_url)
    try:
        body = args.file.read_bytes()
    except OSError as exc:
        print(f"tagproxy: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    kind = BodyKind(args.kind) if args.kind else _kind_of(args.file)
    rewriter = build_rewriter(rules, public_url, owner[0])
    result = rewriter.rewrite(body, kind)
    sys.stdout.buffer.write(result.body)
    sys.stdout.flush()
    for what, count in sorted(result.replacements.items()):
        print(f"rewrote {count} x {what}", file=sys.stderr)
    if result.kept_original:
        print(f"kept the original: {result.reason}", file=sys.stderr)
        return 1
    print(f"{sum(result.replacements.values())} replacements", file=sys.stderr)
    return 0


def _kind_of(path: Path) -> BodyKind:
    guess = {".json": "application/json", ".html": "text/html"}.get(path.suffix)
    return kind_for_content_type(guess or "application/javascript") or BodyKind.JS


__all__ = ["env_name", "main"]
