"""Typed claims: any JSON payload is either typed completely or refused with CLAIMS_MALFORMED, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from auth.claims import MAX_NUMERIC_DATE, TokenClaims, shown
from auth.errors import InvalidToken, Reason
from tests.support import make_claims

CLAIMS = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp", "permissions", "roles", "azp", "tid"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.just("\ud800"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(CLAIMS), json_values, max_size=5))
@example({"aud": [[1]]})
@example({"exp": float("nan")})
@example({"scp": ["a", 1]})
@example({"iss": ""})
def test_any_payload_is_typed_or_refused_as_malformed(changes: dict[str, Any]) -> None:
    try:
        claims = TokenClaims.parse({**make_claims(), **changes})
    except InvalidToken as exc:
        assert exc.reason is Reason.CLAIMS_MALFORMED
        assert exc.detail.isascii()  # the log line gets no odd code points
        return
    for text in (claims.issuer, claims.subject, claims.client_id, claims.token_id, *claims.raw_scopes):
        assert text is None or isinstance(text, str)
        if text is not None:
            text.encode("utf-8")  # valid Unicode text: no lone surrogate got through
    assert claims.audience is None or all(isinstance(audience, str) for audience in claims.audience)
    for moment in (claims.expires, claims.not_before, claims.issued_at):
        assert moment is None or 0 <= moment <= MAX_NUMERIC_DATE


def test_the_audience_is_normalised_once_a_string_becoming_a_one_item_tuple():
    assert TokenClaims.parse(make_claims(aud="a")).audience == ("a",)
    assert TokenClaims.parse(make_claims(aud=["a", "b"])).audience == ("a", "b")
    assert TokenClaims.parse(make_claims(aud=[])).audience is None
    assert TokenClaims.parse(make_claims(drop=("aud",))).audience is None


def test_scopes_come_from_every_dialect_and_a_prefix_also_counts_bare():
    claims = TokenClaims.parse(make_claims(scope="a b", scp=["c"], permissions="d", roles=["e"]))
    assert claims.scopes() == frozenset("abcde")
    prefixed = TokenClaims.parse(make_claims(scope="api/read api/"))
    assert prefixed.scopes("api/") == frozenset({"api/read", "read", "api/"})


@pytest.mark.parametrize("value", ["\ud800", ["ok", "\udfff"]])
def test_a_string_that_is_not_unicode_text_is_refused(value: object) -> None:
    with pytest.raises(InvalidToken) as caught:
        TokenClaims.parse(make_claims(scp=value))
    assert caught.value.reason is Reason.CLAIMS_MALFORMED


def test_shown_is_ascii_and_bounded_whatever_the_value():
    assert shown("\ud800\n") == "'\\ud800\\n'"
    assert len(shown("x" * 1000)) <= 124
    deep: list[object] = []
    for _ in range(10_000):
        deep = [deep]
    assert shown(deep).startswith("<deeply nested") or len(shown(deep)) <= 124
