"""The token rules as objects: each says what it asks, refuses with a reason and a detail that names the cause,
and the verifier, the refusal explanation and the doctor all ask the same objects."""

from __future__ import annotations

import pytest

from auth.claims import TokenClaims
from auth.errors import InvalidToken, Reason
from auth.token_rules import AudienceRule, IssuerRule, LifetimeRule, TokenRules
from tests.support import ISSUER, SERVER_URL, make_claims

NOW = 1_800_000_000.0


def refusal(rule: object, **claims: object) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        rule.check(TokenClaims.parse(make_claims(**claims)), NOW)  # type: ignore[attr-defined]
    return caught.value


def test_lifetime_has_the_leeway_both_ways():
    rule = LifetimeRule(leeway=30)
    rule.check(TokenClaims.parse(make_claims(exp=NOW - 29, iat=NOW + 29)), NOW)
    assert refusal(rule, exp=NOW - 30).reason is Reason.EXPIRED
    assert refusal(rule, exp=NOW + 60, nbf=NOW + 31).reason is Reason.NOT_YET_VALID
    assert refusal(rule, exp=NOW + 60, iat=NOW + 31).reason is Reason.NOT_YET_VALID
    assert refusal(rule, drop=("exp",)).reason is Reason.MISSING_CLAIM


def test_the_issuer_is_compared_exactly_and_the_detail_names_the_trailing_slash():
    exc = refusal(IssuerRule((ISSUER,)), iss=ISSUER.rstrip("/"), exp=NOW + 60)
    assert exc.reason is Reason.ISSUER
    assert "differ only by a trailing slash" in exc.detail


def test_the_audience_rule_explains_the_usual_causes():
    rule = AudienceRule((SERVER_URL,))
    assert "Microsoft Graph" in refusal(rule, aud="https://graph.microsoft.com").detail
    assert "Auth0 token with no API audience" in refusal(rule, aud=["https://x/userinfo"]).detail
    assert refusal(rule, drop=("aud",)).reason is Reason.MISSING_CLAIM
    AudienceRule((SERVER_URL,), optional=True).check(TokenClaims.parse(make_claims(drop=("aud",))), NOW)


def test_the_rules_check_in_order_and_build_the_principal():
    rules = TokenRules.create(issuers=(ISSUER,), audiences=(SERVER_URL,), clock=lambda: NOW)
    principal = rules.check(TokenClaims.parse(make_claims(exp=NOW + 60, iat=NOW)))
    assert principal.subject == "user-123" and principal.audience == (SERVER_URL,)
    with pytest.raises(InvalidToken) as caught:  # expired and foreign: the lifetime is said first
        rules.check(TokenClaims.parse(make_claims(exp=NOW - 600, iss="https://other/")))
    assert caught.value.reason is Reason.EXPIRED
    # A key binding is no claim rule: the principal carries it, and auth.binding checks it on every request.
    bound = rules.check(TokenClaims.parse(make_claims(exp=NOW + 60, cnf={"jkt": "x", "n": 1})))
    assert bound.confirmation == {"jkt": "x"}
    assert rules.check(TokenClaims.parse(make_claims(exp=NOW + 60, cnf="odd"))).confirmation == {}
    assert principal.confirmation is None
    assert [type(rule).__name__ for rule in rules.claim_rules] == [
        "LifetimeRule",
        "IssuerRule",
        "TokenTypeRule",
        "AudienceRule",
        "SubjectRule",
    ]
