"""The privacy engine on the relay path: decide, then edit what leaves.

A `PrivacyPlan` is built once per rule when the rule set and the site's
consent settings are loaded; it holds only the work that rule needs. A rule
with nothing to do gets no plan at all, so its requests pay one dict miss.
Per request the plan makes a `Decision` before anything is sent: pass, strip
or drop and why, the visitor's address in the form it may leave, and the
scrubbed query and body. The relay then asks the decision to edit the
upstream headers and the answer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .. import headers as h
from ..cookies import filter_cookie_header
from ..rules.model import Rule, RuleSet
from .address import visitor_address
from .consent import ConsentConfig, State, combine, cookie_pairs, google_consent
from .model import (
    PIXEL_GIF,
    Action,
    Answer,
    Gate,
    IpHandling,
    PrivacyPolicy,
    Purpose,
    QueryScrub,
)
from .scrub import BodyEditor, ParamEditor
from .setcookie import COOKIE_VALUE, apply_policy, expired_cookie, server_cookie

log = logging.getLogger(__name__)

SEC_GPC: Final = "Sec-GPC"
DNT: Final = "DNT"
_VISITOR_ID_BYTES: Final = 18  # 144 random bits, 24 URL-safe characters
_NO_COOKIES: Final[Mapping[str, str]] = {}


class PrivacyPlan:
    """One rule's privacy work, precomputed."""

    def __init__(self, rule: Rule, consent: ConsentConfig | None) -> None:
        policy = policy_of(rule)
        self.vendor = rule.vendor
        self.policy = policy
        self.consent = consent
        self._gate = policy.gate
        self._host_gates = dict(policy.host_gates)
        # With no consent settings only the page's own signals (consent mode)
        # can refuse; with them, no signal at all means the operator's
        # `missing` (denied unless they said otherwise).
        self._reads_consent = consent is not None or policy.consent_mode
        self._missing = consent.missing if consent is not None else State.GRANTED
        self._missing_grants = consent is not None and consent.missing is State.GRANTED
        self._reads_cookies = consent is not None or _sets_cookies(policy)
        self._sets_cookies = _sets_cookies(policy)
        self._cookie_purpose = policy.cookies.purpose or policy.gate.purpose

        strip = policy.identifiers
        query = policy.query
        self._query = {
            Action.PASS: _param_editor(query.drop.patterns, query),
            Action.STRIP: _param_editor(
                (*query.drop.patterns, *strip.query.patterns), query
            ),
        }
        body = policy.body
        self._body: dict[Action, BodyEditor | None] = {
            Action.PASS: None,
            Action.STRIP: None,
        }
        if body is not None:
            dropped = (*body.drop, *strip.body)
            self._body[Action.PASS] = BodyEditor(body, body.drop)
            self._body[Action.STRIP] = BodyEditor(body, dropped)
        self._ip = {
            Action.PASS: policy.ip,
            Action.STRIP: max(policy.ip, strip.ip, key=lambda i: i.severity),
        }

    @staticmethod
    def needed(rule: Rule, consent: ConsentConfig | None) -> bool:
        """Whether this rule has any privacy work at all."""
        policy = policy_of(rule)
        reads = consent is not None or policy.consent_mode
        if any(_gate_works(gate, reads) for gate in policy.gates):
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
        body: bytes,
    ) -> Decision:
        """Everything privacy does to one beacon, settled before it is sent."""
        gate = self._host_gates.get(host, self._gate)
        cookies = _NO_COOKIES
        if self._reads_cookies:
            cookies = cookie_pairs(headers.getall(h.COOKIE, ()))
        state = self._consent_state(gate.purpose, cookies, raw_query)
        action, reason = self._action(gate, state, headers)

        if action is not Action.DROP:
            edited = self._edit_body(action, headers, body)
            if edited is None:
                # Strip must not let identifiers through in a body it cannot
                # read (compressed, undeclared type, malformed): nothing goes.
                action, edited = Action.DROP, body
            body = edited
        query = raw_query
        if action is not Action.DROP:
            editor = self._query[action]
            query = editor.edit(raw_query) if editor is not None else raw_query

        # tagproxy's own cookies follow consent for their purpose, which a
        # beacon of another purpose (Google Ads next to GA4) may not share.
        cookie_state = state
        if self._sets_cookies and gate.purpose is not self._cookie_purpose:
            cookie_state = self._consent_state(self._cookie_purpose, cookies, raw_query)
        consented = action is Action.PASS and (
            cookie_state is State.GRANTED
            or (cookie_state is State.UNKNOWN and self._missing_grants)
        )
        return Decision(
            self,
            action,
            reason,
            visitor_address(visitor, self._ip.get(action, IpHandling.WITHHOLD)),
            query,
            body,
            cookies,
            consented=consented,
            refused=cookie_state is State.DENIED or action is not Action.PASS,
        )

    def _consent_state(
        self, purpose: Purpose, cookies: Mapping[str, str], raw_query: str
    ) -> State:
        if purpose is Purpose.NONE or not self._reads_consent:
            return State.UNKNOWN
        state = State.UNKNOWN
        if self.consent is not None:
            state = self.consent.state(purpose, cookies)
        if self.policy.consent_mode and ("gcs=" in raw_query or "gcd=" in raw_query):
            page = google_consent(raw_query).get(purpose, State.UNKNOWN)
            state = combine(state, page)
        return state

    def _action(
        self, gate: Gate, state: State, headers: CIMultiDictProxy[str]
    ) -> tuple[Action, str]:
        action, reason = Action.PASS, ""
        effective = self._missing if state is State.UNKNOWN else state
        if effective is State.DENIED and gate.without_consent is not Action.PASS:
            action, reason = gate.without_consent, "consent"
        if gate.gpc.severity > action.severity and _says_one(headers.get(SEC_GPC)):
            action, reason = gate.gpc, "gpc"
        if gate.dnt.severity > action.severity and _says_one(headers.get(DNT)):
            action, reason = gate.dnt, "dnt"
        return action, reason

    def _edit_body(
        self, action: Action, headers: CIMultiDictProxy[str], body: bytes
    ) -> bytes | None:
        editor = self._body[action]
        strips_fields = action is Action.STRIP and bool(self.policy.identifiers.body)
        if not body or (editor is None and not strips_fields):
            return body
        readable = editor is not None and editor.applies(
            headers.get(h.CONTENT_TYPE), headers.get(h.CONTENT_ENCODING)
        )
        if not readable:
            return None if strips_fields else body
        assert editor is not None
        edited = editor.edit(body)
        if edited is None and not strips_fields:
            return body  # not what the rule declared: scrubbing is best effort
        return edited

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
        "body",
        "consented",
        "cookies",
        "plan",
        "query",
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
        query: str,
        body: bytes,
        cookies: Mapping[str, str],
        *,
        consented: bool,
        refused: bool,
    ) -> None:
        self.plan = plan
        self.action = action
        self.reason = reason
        self.visitor = visitor  # the address as it may leave; None: not at all
        self.query = query  # the visitor's query, scrubbed
        self.body = body  # the body to send, scrubbed
        self.cookies = cookies  # the request's cookies, when the plan reads them
        self.consented = consented  # tagproxy may set its cookies
        self.refused = refused  # consent refused: tagproxy's own cookie goes
        self.visitor_id = self._visitor_id()

    @property
    def label(self) -> str:
        """For logs and metrics: `drop:consent`, `strip:gpc`, ... or `pass`."""
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

    # --- the upstream request --------------------------------------------------

    def edit_headers(self, out: CIMultiDict[str]) -> None:
        """Strip identifier cookies; give the vendor tagproxy's visitor ID."""
        policy = self.plan.policy
        if self.action is Action.STRIP and h.COOKIE in out:
            strip = policy.identifiers.cookies
            kept = filter_cookie_header(out.getall(h.COOKIE), lambda n: not strip(n))
            del out[h.COOKIE]
            if kept:
                out[h.COOKIE] = kept
        spec = policy.visitor_id
        if (
            self.visitor_id is not None
            and spec is not None
            and spec.forwarded
            and self.cookies.get(spec.cookie) != self.visitor_id
        ):
            # The first beacon after consent already carries the new ID.
            kept = filter_cookie_header(
                out.getall(h.COOKIE, ()), lambda n: n != spec.cookie
            )
            pair = f"{spec.cookie}={self.visitor_id}"
            out[h.COOKIE] = f"{kept}; {pair}" if kept else pair

    # --- the answer ----------------------------------------------------------

    def dropped(
        self, method: str, public_url: URL, cookie_domain: str | None
    ) -> web.Response:
        """What the browser gets for a beacon that was not sent."""
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
            for value in out.popall(h.SET_COOKIE):
                out.add(h.SET_COOKIE, apply_policy(value, policy, cookie_domain))
        self._own_cookies(out, public_url, cookie_domain)

    def _own_cookies(
        self, out: CIMultiDict[str], public_url: URL, cookie_domain: str | None
    ) -> None:
        privacy = self.plan.policy
        policy = privacy.cookies
        spec = privacy.visitor_id
        if not self.consented:
            if self.refused and spec is not None and spec.cookie in self.cookies:
                out.add(
                    h.SET_COOKIE, expired_cookie(spec.cookie, policy, cookie_domain)
                )
            return

        secure = policy.secure
        if secure is None:
            secure = public_url.scheme == "https"
        reissue = policy.reissue
        for name, value in self.cookies.items() if reissue is not None else ():
            assert reissue is not None
            if reissue(name) and COOKIE_VALUE.fullmatch(value):
                cookie = server_cookie(
                    name,
                    value,
                    policy.reissue_max_age,
                    policy,
                    cookie_domain,
                    secure=secure,
                    http_only=False,  # the vendor's script reads it
                )
                out.add(h.SET_COOKIE, cookie)
        if spec is not None and self.visitor_id is not None:
            cookie = server_cookie(
                spec.cookie,
                self.visitor_id,
                spec.max_age,
                policy,
                cookie_domain,
                secure=secure,
                http_only=True,
            )
            out.add(h.SET_COOKIE, cookie)


class Privacy:
    """The plans of a rule set under the site's consent settings."""

    def __init__(self, rules: RuleSet, consent: ConsentConfig | None = None) -> None:
        self.consent = consent
        self._plans = {
            rule.vendor: PrivacyPlan(rule, consent)
            for rule in rules.rules
            if PrivacyPlan.needed(rule, consent)
        }
        if consent is not None:
            _warn_undefined_purposes(rules, consent)

    def plan_for(self, rule: Rule) -> PrivacyPlan | None:
        return self._plans.get(rule.vendor)

    def script_visitor(self, rule: Rule, visitor: str) -> str | None:
        """The address a script fetch may pass on, under the rule's IP handling."""
        plan = self._plans.get(rule.vendor)
        if plan is None:
            return visitor
        return visitor_address(visitor, plan.policy.ip)


def _warn_undefined_purposes(rules: RuleSet, consent: ConsentConfig) -> None:
    """A purpose the consent settings do not define can never be granted by
    a cookie: say so at start-up rather than let its beacons vanish quietly."""
    for rule in rules.rules:
        for gate in policy_of(rule).gates:
            purpose = gate.purpose
            if purpose is Purpose.NONE or purpose in consent.purposes:
                continue
            log.warning(
                "consent settings %s define no %s purpose: %s beacons have no "
                "consent cookie to grant it (without consent: %s)",
                consent.source,
                purpose.value,
                rule.vendor,
                gate.without_consent.value,
            )


def policy_of(rule: Rule) -> PrivacyPolicy:
    policy = rule.privacy
    assert policy is not None, "the loader gives every rule a privacy policy"
    return policy


def _sets_cookies(policy: PrivacyPolicy) -> bool:
    return policy.cookies.reissue is not None or policy.visitor_id is not None


def _gate_works(gate: Gate, reads_consent: bool) -> bool:
    if gate.without_consent is not Action.PASS and reads_consent:
        return True
    return gate.gpc is not Action.PASS or gate.dnt is not Action.PASS


def _says_one(header: str | None) -> bool:
    return header is not None and header.strip() == "1"


def _default_answer(method: str) -> Answer:
    # An image pixel expects an image; sendBeacon and fetch are content with
    # an empty success.
    if method in ("GET", "HEAD"):
        return Answer(200, "image/gif", PIXEL_GIF)
    return Answer(204, None, b"")


def _param_editor(drop: tuple[str, ...], scrub: QueryScrub) -> ParamEditor | None:
    if not drop and not scrub.replace and not scrub.urls:
        return None
    return ParamEditor(drop, scrub.replace, scrub.urls)
