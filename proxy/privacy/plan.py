"""The privacy engine on the relay path: decide, then edit what leaves.

A `PrivacyPlan` is built once per rule when the rule set and the site's
consent settings are loaded; it holds only the work that rule needs. A rule
with nothing to do gets no plan at all, so its requests pay one dict miss.
Per request the plan makes a `Decision` (pass, strip or drop, and why) and
the relay asks that decision to edit the query, the request and the answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .. import headers as h
from ..cookies import filter_cookie_header
from ..rules.model import NameMatcher, Rule, RuleSet
from .address import visitor_address
from .consent import ConsentConfig, State, combine, cookie_pairs, google_consent
from .model import (
    PIXEL_GIF,
    Action,
    Answer,
    IpHandling,
    PrivacyPolicy,
    Purpose,
    QueryScrub,
)
from .scrub import BodyEditor, NameTest, ParamEditor, either
from .setcookie import COOKIE_VALUE, apply_policy, expired_cookie, server_cookie

SEC_GPC: Final = "Sec-GPC"
DNT: Final = "DNT"
_VISITOR_ID_BYTES: Final = 18  # 144 random bits, 24 URL-safe characters
_NO_COOKIES: Final[Mapping[str, str]] = {}


class PrivacyPlan:
    """One rule's privacy work, precomputed."""

    def __init__(self, rule: Rule, consent: ConsentConfig | None) -> None:
        policy = _policy_of(rule)
        self.vendor = rule.vendor
        self.policy = policy
        self.consent = consent
        self._gate = policy.gate
        self._host_gates = dict(policy.host_gates)
        self._consent_mode = policy.consent_mode
        # With no consent settings, only the page's own signals (consent
        # mode) can refuse; with them, no signal at all means the operator's
        # `missing` (denied unless they said otherwise).
        self._missing = consent.missing if consent is not None else State.GRANTED
        self._missing_is_grant = (
            consent is not None and consent.missing is State.GRANTED
        )
        self._reads_consent = consent is not None or policy.consent_mode

        strip = policy.identifiers
        query = policy.query
        self._query_pass = _param_editor(query.drop or None, query)
        self._query_strip = _param_editor(
            either(query.drop or None, strip.query), query
        )
        body = policy.body
        self._body_pass = self._body_strip = None
        if body is not None:
            self._body_pass = BodyEditor(body, body.drop, _names(body.drop))
            dropped = (*body.drop, *strip.body)
            self._body_strip = BodyEditor(body, dropped, _names(dropped))
        self._strip_ip = (
            policy.ip if policy.ip.severity >= strip.ip.severity else strip.ip
        )
        cookies = policy.cookies
        self._sets_cookies = (
            cookies.reissue is not None or policy.visitor_id is not None
        )

    @staticmethod
    def needed(rule: Rule, consent: ConsentConfig | None) -> bool:
        """Whether this rule has any privacy work at all."""
        policy = _policy_of(rule)
        reads = consent is not None or policy.consent_mode
        for gate in policy.gates:
            if gate.without_consent is not Action.PASS and reads:
                return True
            if gate.gpc is not Action.PASS or gate.dnt is not Action.PASS:
                return True
        body = policy.body
        return (
            policy.ip is not IpHandling.FORWARD
            or policy.query.active
            or (body is not None and body.edits)
            or policy.cookies.declared
            or policy.visitor_id is not None
        )

    # --- deciding ------------------------------------------------------------

    def decide(
        self,
        headers: CIMultiDictProxy[str],
        host: str,
        raw_query: str,
        visitor: str,
    ) -> Decision:
        gate = self._host_gates.get(host, self._gate)
        cookies = _NO_COOKIES
        if self.consent is not None or self._sets_cookies:
            cookies = cookie_pairs(headers.getall(h.COOKIE, ()))

        state = self._consent_state(gate.purpose, cookies, raw_query)
        action, reason = Action.PASS, ""
        effective = self._missing if state is State.UNKNOWN else state
        if effective is State.DENIED and gate.purpose is not Purpose.NONE:
            action, reason = gate.without_consent, "consent"
        action, reason = _escalate(
            action, reason, gate.gpc, headers.get(SEC_GPC), "gpc"
        )
        action, reason = _escalate(action, reason, gate.dnt, headers.get(DNT), "dnt")
        if action is Action.PASS:
            reason = ""

        ip = self._strip_ip if action is Action.STRIP else self.policy.ip
        consented = (
            action is Action.PASS
            and gate.purpose is not Purpose.NONE
            and (
                state is State.GRANTED
                or (state is State.UNKNOWN and self._missing_is_grant)
            )
        )
        refused = state is State.DENIED or action is not Action.PASS
        return Decision(
            self,
            action,
            reason,
            visitor_address(visitor, ip),
            cookies,
            consented=consented,
            refused=refused,
        )

    def _consent_state(
        self, purpose: Purpose, cookies: Mapping[str, str], raw_query: str
    ) -> State:
        if purpose is Purpose.NONE or not self._reads_consent:
            return State.UNKNOWN
        state = State.UNKNOWN
        if self.consent is not None:
            state = self.consent.state(purpose, cookies)
        if self._consent_mode and ("gcs=" in raw_query or "gcd=" in raw_query):
            page = google_consent(raw_query).get(purpose, State.UNKNOWN)
            state = combine(state, page)
        return state

    # --- answering a dropped beacon --------------------------------------------

    def answer(self, method: str) -> web.Response:
        answer = self.policy.answer or _default_answer(method)
        response = web.Response(
            status=answer.status,
            body=answer.body if method != "HEAD" else None,
            headers={h.CACHE_CONTROL: "no-store"},
        )
        if answer.content_type:
            response.content_type = answer.content_type
        return response


class Decision:
    """What privacy does to one beacon, and the edits that follow from it."""

    __slots__ = (
        "action",
        "consented",
        "cookies",
        "plan",
        "reason",
        "refused",
        "visitor",
        "visitor_id",
    )

    def __init__(
        self,
        plan: PrivacyPlan,
        action: Action,
        reason: str,
        visitor: str | None,
        cookies: Mapping[str, str],
        *,
        consented: bool,
        refused: bool,
    ) -> None:
        self.plan = plan
        self.action = action
        self.reason = reason
        self.visitor = visitor  # the address as it may leave; None: not at all
        self.cookies = cookies
        self.consented = consented  # tagproxy may set its cookies
        self.refused = refused  # consent refused: tagproxy's own cookies go
        self.visitor_id = self._visitor_id()

    @property
    def label(self) -> str:
        """For logs and metrics: `drop:consent`, `strip:gpc`, or `pass`."""
        return f"{self.action.value}:{self.reason}" if self.reason else "pass"

    @property
    def drops(self) -> bool:
        return self.action is Action.DROP

    def _visitor_id(self) -> str | None:
        spec = self.plan.policy.visitor_id
        if spec is None or not self.consented:
            return None
        current = self.cookies.get(spec.cookie, "")
        if 16 <= len(current) <= 64 and COOKIE_VALUE.fullmatch(current):
            return current
        return secrets.token_urlsafe(_VISITOR_ID_BYTES)

    # --- the request ---------------------------------------------------------

    def edit_query(self, raw: str) -> str:
        """The visitor's query, scrubbed; before tagproxy adds its own parameters."""
        plan = self.plan
        editor = plan._query_strip if self.action is Action.STRIP else plan._query_pass
        return editor.edit(raw) if editor is not None else raw

    def edit_request(
        self, incoming: CIMultiDictProxy[str], out: CIMultiDict[str], body: bytes
    ) -> bytes:
        """Cookies and body of the upstream request; returns the body to send."""
        plan = self.plan
        if self.action is Action.STRIP and h.COOKIE in out:
            strip = plan.policy.identifiers.cookies
            kept = filter_cookie_header(out.getall(h.COOKIE), lambda n: not strip(n))
            del out[h.COOKIE]
            if kept:
                out[h.COOKIE] = kept
        spec = plan.policy.visitor_id
        if (
            self.visitor_id is not None
            and spec is not None
            and spec.forwarded
            and spec.cookie not in self.cookies
        ):
            # The first beacon after consent already carries the new ID.
            pair = f"{spec.cookie}={self.visitor_id}"
            current = out.get(h.COOKIE)
            out[h.COOKIE] = f"{current}; {pair}" if current else pair

        editor = plan._body_strip if self.action is Action.STRIP else plan._body_pass
        if editor is None or not editor.applies(
            incoming.get(h.CONTENT_TYPE), incoming.get(h.CONTENT_ENCODING)
        ):
            return body
        return editor.edit(body)

    # --- the answer ----------------------------------------------------------

    def dropped(
        self, method: str, public_url: URL, cookie_domain: str | None
    ) -> web.Response:
        response = self.plan.answer(method)
        self._own_cookies(response.headers, public_url, cookie_domain)
        return response

    def edit_response(
        self, out: CIMultiDict[str], public_url: URL, cookie_domain: str | None
    ) -> None:
        """Vendor Set-Cookie under the rule's policy, then tagproxy's own cookies."""
        policy = self.plan.policy.cookies
        if self.action is not Action.PASS:
            out.popall(h.SET_COOKIE, None)  # no vendor cookie without consent
        elif policy.declared and h.SET_COOKIE in out:
            values = out.popall(h.SET_COOKIE)
            for value in values:
                out.add(h.SET_COOKIE, apply_policy(value, policy, cookie_domain))
        self._own_cookies(out, public_url, cookie_domain)

    def _own_cookies(
        self, out: CIMultiDict[str], public_url: URL, cookie_domain: str | None
    ) -> None:
        plan = self.plan.policy
        policy = plan.cookies
        secure = (
            policy.secure if policy.secure is not None else public_url.scheme == "https"
        )
        spec = plan.visitor_id
        if self.consented:
            reissue = policy.reissue
            if reissue is not None:
                for name, value in self.cookies.items():
                    if reissue(name) and COOKIE_VALUE.fullmatch(value):
                        out.add(
                            h.SET_COOKIE,
                            server_cookie(
                                name,
                                value,
                                policy.reissue_max_age,
                                policy,
                                cookie_domain,
                                secure=secure,
                                http_only=False,  # the vendor's script reads it
                            ),
                        )
            if spec is not None and self.visitor_id is not None:
                out.add(
                    h.SET_COOKIE,
                    server_cookie(
                        spec.cookie,
                        self.visitor_id,
                        spec.max_age,
                        policy,
                        cookie_domain,
                        secure=secure,
                        http_only=True,
                    ),
                )
        elif self.refused and spec is not None and spec.cookie in self.cookies:
            out.add(h.SET_COOKIE, expired_cookie(spec.cookie, policy, cookie_domain))


class Privacy:
    """The plans of a rule set under the site's consent settings."""

    def __init__(self, rules: RuleSet, consent: ConsentConfig | None = None) -> None:
        self.consent = consent
        self._plans = {
            rule.vendor: PrivacyPlan(rule, consent)
            for rule in rules.rules
            if PrivacyPlan.needed(rule, consent)
        }

    def plan_for(self, rule: Rule) -> PrivacyPlan | None:
        return self._plans.get(rule.vendor)

    def script_visitor(self, rule: Rule, visitor: str) -> str | None:
        """The address a script fetch may pass on, under the rule's IP handling."""
        plan = self._plans.get(rule.vendor)
        if plan is None:
            return visitor
        return visitor_address(visitor, plan.policy.ip)


def _policy_of(rule: Rule) -> PrivacyPolicy:
    policy = rule.privacy
    assert policy is not None, "the loader gives every rule a privacy policy"
    return policy


def _escalate(
    action: Action, reason: str, on_signal: Action, header: str | None, why: str
) -> tuple[Action, str]:
    if (
        on_signal.severity > action.severity
        and header is not None
        and header.strip() == "1"
    ):
        return on_signal, why
    return action, reason


def _default_answer(method: str) -> Answer:
    # An image pixel expects an image; sendBeacon and fetch are content with
    # an empty success.
    if method in ("GET", "HEAD"):
        return Answer(200, "image/gif", PIXEL_GIF)
    return Answer(204, None, b"")


def _param_editor(drop: NameTest | None, scrub: QueryScrub) -> ParamEditor | None:
    if drop is None and not scrub.replace and not scrub.urls:
        return None
    return ParamEditor(drop or _nothing, scrub.replace, scrub.urls)


def _nothing(_: str) -> bool:
    return False


def _names(names: tuple[str, ...]) -> NameMatcher | None:
    return NameMatcher.of(names) if names else None
