"""The credential step: one Authorization header, the Bearer scheme, a non-empty token; anything else a 4xx."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth.credential import Credential, bearer_token, request_credential
from auth.errors import AuthError, InvalidRequest, InvalidToken, MissingToken, Reason


def test_the_token_of_a_bearer_header_in_any_case():
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"Authorization", b"bEaReR   abc  ")]) == "abc"


@pytest.mark.parametrize(
    ("headers", "kind", "reason"),
    [
        ([], MissingToken, Reason.MISSING),
        ([(b"authorization", b"Basic dXNlcjpw")], MissingToken, Reason.OTHER_SCHEME),
        ([(b"authorization", b"Bearer ")], InvalidToken, Reason.EMPTY),
        ([(b"authorization", b"Bearer  \t")], InvalidToken, Reason.EMPTY),
        ([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")], InvalidRequest, Reason.DUPLICATE_HEADER),
    ],
)
def test_refusals_name_their_reason(headers, kind, reason):
    with pytest.raises(kind) as caught:
        bearer_token(headers)
    assert caught.value.reason is reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"Authorization", b"x"]), st.binary(max_size=40))))
def test_any_headers_give_a_token_or_an_auth_error(headers):
    try:
        token = bearer_token(headers)
    except AuthError as exc:
        assert 400 <= exc.status < 500
    else:
        assert token and token == token.strip()


def test_the_dpop_scheme_in_any_case():
    assert request_credential([(b"authorization", b"DPoP abc")]) == Credential("dpop", "abc")
    assert request_credential([(b"authorization", b"dpop  abc ")]) == Credential("dpop", "abc")
    assert request_credential([(b"authorization", b"BEARER abc")]) == Credential("bearer", "abc")
    assert "abc" not in repr(Credential("dpop", "abc"))


def test_only_bearer_where_only_bearer_is_spoken():
    with pytest.raises(MissingToken) as caught:
        bearer_token([(b"authorization", b"DPoP abc")])
    assert caught.value.reason is Reason.OTHER_SCHEME
