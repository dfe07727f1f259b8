"""Loading rules and sites, and reloading them while serving.

A reload reads and validates every file in a worker thread, off the request
path. Only a complete, valid set replaces the one serving, in one assignment
(`Proxy.swap`); any error leaves the old set serving, logged and counted.
Requests already running finish on the set they started with.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from . import metrics
from .config import Settings
from .errors import ConfigError
from .rules import RuleSet, load_rules
from .server import Generation, Proxy
from .sites import Sites, load_sites

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    rules: RuleSet
    sites: Sites | None


def load_config(settings: Settings) -> Loaded:
    """Every rule file and the sites file, validated; ConfigError on any fault."""
    rules = load_rules(settings.rules, settings.variables)
    sites = load_sites(settings.sites, rules) if settings.sites else None
    return Loaded(rules, sites)


def describe(rules: RuleSet, sites: Sites | None) -> dict[str, object]:
    """What is serving, for the admin API: no secrets, no visitor data."""
    out: dict[str, object] = {
        "rules": [
            {
                "vendor": rule.vendor,
                "mount": rule.mount,
                "file": str(rule.source),
                "hosts": [host.host for host in rule.hosts],
                "scripts": len(rule.scripts),
                "relays": len(rule.relays),
            }
            for rule in rules.rules
        ]
    }
    if sites is not None:
        out["sites_file"] = str(sites.source)
        out["default_site"] = sites.default.name if sites.default else None
        out["sites"] = [
            {
                "name": site.name,
                "hosts": list(site.hosts),
                "public_url": str(site.site.public_url or "") or None,
                "cookie_domain": site.site.cookie_domain,
                "vendors": sorted(site.vendors) if site.vendors is not None else None,
                "tag_ids": {v: sorted(ids) for v, ids in site.tag_ids.items()},
            }
            for site in sites.sites
        ]
    return out


@dataclass(frozen=True, slots=True)
class Changes:
    """What a new configuration changes, by vendor and by site name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    sites_added: tuple[str, ...] = ()
    sites_removed: tuple[str, ...] = ()
    sites_changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(
            (
                self.added,
                self.removed,
                self.changed,
                self.sites_added,
                self.sites_removed,
                self.sites_changed,
            )
        )

    def describe(self) -> str:
        parts = []
        for word, names in (
            ("rules added", self.added),
            ("rules removed", self.removed),
            ("rules changed", self.changed),
            ("sites added", self.sites_added),
            ("sites removed", self.sites_removed),
            ("sites changed", self.sites_changed),
        ):
            if names:
                parts.append(f"{word}: {', '.join(names)}")
        return "; ".join(parts) or "no changes"

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "rules_added": list(self.added),
            "rules_removed": list(self.removed),
            "rules_changed": list(self.changed),
            "sites_added": list(self.sites_added),
            "sites_removed": list(self.sites_removed),
            "sites_changed": list(self.sites_changed),
        }


def compare(old: Loaded, new: Loaded) -> Changes:
    """Rules compared by vendor, sites by name; frozen models compare by value."""
    old_rules = dict(old.rules.by_vendor)
    new_rules = dict(new.rules.by_vendor)
    old_sites = {s.name: s for s in old.sites.sites} if old.sites else {}
    new_sites = {s.name: s for s in new.sites.sites} if new.sites else {}
    sites_changed = [
        n for n in new_sites if n in old_sites and new_sites[n] != old_sites[n]
    ]
    default_moved = (old.sites and old.sites.default) != (
        new.sites and new.sites.default
    )
    if default_moved:
        sites_changed.append("(default)")
    return Changes(
        added=tuple(sorted(new_rules.keys() - old_rules.keys())),
        removed=tuple(sorted(old_rules.keys() - new_rules.keys())),
        changed=tuple(
            sorted(
                v for v in new_rules if v in old_rules and new_rules[v] != old_rules[v]
            )
        ),
        sites_added=tuple(sorted(new_sites.keys() - old_sites.keys())),
        sites_removed=tuple(sorted(old_sites.keys() - new_sites.keys())),
        sites_changed=tuple(sites_changed),
    )


@dataclass(frozen=True, slots=True)
class ReloadReport:
    result: str  # ok, unchanged or error
    changes: Changes = field(default_factory=Changes)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result != "error"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"result": self.result}
        if self.error is not None:
            out["error"] = self.error
        out.update(self.changes.as_dict())
        return out


class Reloader:
    """Reloads for one Proxy, one at a time, from SIGHUP or the admin API."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self._lock = asyncio.Lock()
        generation = proxy.generation
        metrics.rules_serving(len(generation.rules.rules), _site_count(generation))

    async def reload(self, why: str) -> ReloadReport:
        async with self._lock:
            report = await self._reload()
        if report.result == "error":
            log.error(
                "reload (%s) failed; still serving the previous rules: %s",
                why,
                report.error,
            )
        else:
            log.info("reload (%s): %s", why, report.changes.describe())
        metrics.reload_result(report.result)
        return report

    async def _reload(self) -> ReloadReport:
        current = self.proxy.generation
        try:
            new = await asyncio.to_thread(load_config, self.proxy.settings)
        except ConfigError as exc:
            return ReloadReport("error", error=str(exc))
        except Exception as exc:
            # A bug in loading must not take serving down with it.
            log.exception("reload: unexpected error while loading")
            return ReloadReport("error", error=f"{type(exc).__name__}: {exc}")

        changes = compare(Loaded(current.rules, current.sites), new)
        if not changes:
            # Nothing to do: keep the caches warm.
            return ReloadReport("unchanged")
        try:
            self.proxy.swap(new.rules, new.sites)
        except Exception as exc:
            # Building the new services failed: the old ones still serve.
            log.exception("reload: the new rules could not be put in service")
            return ReloadReport("error", error=f"{type(exc).__name__}: {exc}")
        generation = self.proxy.generation
        metrics.rules_serving(len(generation.rules.rules), _site_count(generation))
        return ReloadReport("ok", changes)


def _site_count(generation: Generation) -> int:
    return len(generation.sites.sites) if generation.sites else 1
