"""The bind step on its own: the modes, the mTLS hook, the replay guard and the stateless server nonces."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from auth.binding import KeyBinding, describe_confirmation
from auth.credential import Credential
from auth.dpop_nonce import NonceSource
from auth.dpop_proof import ProofPolicy
from auth.dpop_replay import ReplayGuard
from auth.errors import AuthError, InvalidDpopProof, InvalidToken, MissingToken, Reason, UseDpopNonce
from auth.principal import Principal
from settings import DEFAULT_DPOP_ALGORITHMS
from tests.support import SERVER_URL, Clock, DpopKey

POLICY = ProofPolicy(algorithms=frozenset(DEFAULT_DPOP_ALGORITHMS), max_age=300)
SECRET = b"k" * 32


def principal(confirmation: dict[str, str] | None = None) -> Principal:
    return Principal(
        subject="user-1",
        client_id="c",
        issuer="https://idp/",
        audience=(SERVER_URL,),
        scopes=frozenset(),
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        confirmation=confirmation,
    )


def scope(proof: str | None = None, path: str = "/mcp") -> dict[str, Any]:
    headers = [(b"dpop", proof.encode())] if proof is not None else []
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def binding(**options: Any) -> KeyBinding:
    return KeyBinding(**{"mode": "allowed", "policy": POLICY, "server_url": SERVER_URL, **options})


async def refusal(bind: KeyBinding, who: Principal, credential: Credential, request: dict[str, Any]) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await bind.check(who, credential, request)
    return caught.value


@pytest.fixture
def key(ec_private_key) -> DpopKey:
    return DpopKey(ec_private_key, "ES256")


async def test_an_unbound_bearer_token_passes_and_a_bound_one_never(key):
    bind = binding()
    assert await bind.check(principal(), Credential("bearer", "t"), scope()) == "bearer"
    for cnf, cites in (({"jkt": key.thumbprint}, "RFC 9449"), ({"x5t#S256": "x"}, "RFC 8705"), ({}, "RFC 7800")):
        exc = await refusal(bind, principal(cnf), Credential("bearer", "t"), scope())
        assert isinstance(exc, InvalidToken) and exc.reason is Reason.KEY_BOUND and cites in exc.detail


async def test_a_bound_token_with_its_proof_passes(key):
    bind = binding()
    proof = key.proof(token="t")
    assert await bind.check(principal({"jkt": key.thumbprint}), Credential("dpop", "t"), scope(proof)) == "dpop"


async def test_the_modes_refuse_before_verification():
    with pytest.raises(MissingToken):
        KeyBinding().admit(Credential("dpop", "t"))  # off, the default: as any other scheme
    with pytest.raises(InvalidToken) as caught:
        binding(mode="required").admit(Credential("bearer", "t"))
    assert caught.value.reason is Reason.DPOP_REQUIRED
    binding().admit(Credential("bearer", "t"))
    binding().admit(Credential("dpop", "t"))


async def test_the_mtls_hook_checks_certificate_bound_tokens():
    seen: list[str] = []

    def certificate(request: dict[str, Any], thumbprint: str) -> None:
        seen.append(thumbprint)
        if thumbprint != "good":
            raise InvalidToken(Reason.KEY_BOUND, detail="another certificate")

    bind = binding(certificate=certificate)
    assert await bind.check(principal({"x5t#S256": "good"}), Credential("bearer", "t"), scope()) == "mtls"
    exc = await refusal(bind, principal({"x5t#S256": "bad"}), Credential("bearer", "t"), scope())
    assert exc.detail == "another certificate" and seen == ["good", "bad"]


async def test_a_proof_for_another_key_or_without_nonce_is_refused(key, ed_private_key):
    other = DpopKey(ed_private_key, "EdDSA")
    bind = binding()
    exc = await refusal(
        bind, principal({"jkt": key.thumbprint}), Credential("dpop", "t"), scope(other.proof(token="t"))
    )
    assert exc.reason is Reason.DPOP_KEY_MISMATCH
    nonces = NonceSource(SECRET, lifetime=300)
    exc = await refusal(
        binding(nonces=nonces), principal({"jkt": key.thumbprint}), Credential("dpop", "t"), scope(key.proof(token="t"))
    )
    assert isinstance(exc, UseDpopNonce) and nonces.age(exc.nonce) is not None


async def test_other_paths_use_the_public_base():
    bind = binding(server_url="https://public.example/prefix/mcp")
    assert bind.public_url("/mcp") == "https://public.example/prefix/mcp"
    assert bind.public_url("/mcp/") == "https://public.example/prefix/mcp/"


def test_describe_confirmation_says_what_each_binding_asks():
    assert "bearer token" in describe_confirmation(None)
    assert "must be sent with the DPoP scheme and a proof" in describe_confirmation({"jkt": "x"})
    assert "certificate" in describe_confirmation({"x5t#S256": "x"})
    assert "cannot check" in describe_confirmation({})


# --- replay ----------------------------------------------------------------------------------------


def test_a_jti_is_accepted_once_per_key_within_the_window():
    clock = Clock(1000)
    guard = ReplayGuard(window=300, clock=clock)
    assert guard.first_use("key-a", "j1", 1000)
    assert not guard.first_use("key-a", "j1", 1000)
    assert guard.first_use("key-b", "j1", 1000)  # another key's proof: its own jti space
    clock.advance(301)
    assert guard.first_use("key-c", "j2", 1301)
    assert len(guard) == 1  # the expired entries are gone


def test_a_proof_dated_ahead_is_remembered_until_its_window_ends():
    clock = Clock(1000)
    guard = ReplayGuard(window=300, clock=clock)
    assert guard.first_use("k", "j", 1290)
    clock.advance(550)
    assert not guard.first_use("k", "j", 1290)  # still acceptable until 1590: still refused


def test_the_guard_is_bounded():
    guard = ReplayGuard(window=300, max_entries=3, clock=Clock(1000))
    for jti in "abcd":
        assert guard.first_use("k", jti, 1000)
    assert len(guard) == 3
    assert guard.first_use("k", "a", 1000)  # the oldest was forgotten first (documented)


# --- nonces ----------------------------------------------------------------------------------------


def test_a_nonce_round_trips_on_every_replica_with_the_same_secret():
    clock = Clock(1_800_000_000)
    one, two = NonceSource(SECRET, lifetime=300, clock=clock), NonceSource(SECRET, lifetime=300, clock=clock)
    nonce = one.issue()
    assert one.age(nonce) == 0 and two.age(nonce) == 0
    assert NonceSource(b"x" * 32, lifetime=300, clock=clock).age(nonce) is None


def test_a_nonce_expires_and_may_come_from_a_replica_slightly_ahead():
    clock = Clock(1_800_000_000)
    source = NonceSource(SECRET, lifetime=300, clock=clock)
    nonce = source.issue()
    clock.advance(300)
    assert source.age(nonce) == 300
    clock.advance(1)
    assert source.age(nonce) is None
    ahead = NonceSource(SECRET, lifetime=300, clock=Clock(1_800_000_020)).issue()
    assert NonceSource(SECRET, lifetime=300, clock=Clock(1_800_000_000)).age(ahead) == -20


@pytest.mark.parametrize("nonce", [None, "", "x" * 32, "é" * 32, "!" * 32, 5, "A" * 31])
def test_anything_else_is_no_nonce(nonce):
    assert NonceSource(SECRET, lifetime=300).age(nonce) is None


def test_the_secret_is_long_and_never_shown():
    with pytest.raises(ValueError):
        NonceSource(b"short", lifetime=300)
    assert "k" * 8 not in repr(NonceSource(SECRET, lifetime=300))


async def test_missing_proof_and_replay_are_proof_faults(key):
    bind = binding()
    who, credential = principal({"jkt": key.thumbprint}), Credential("dpop", "t")
    missing = await refusal(bind, who, credential, scope())
    assert isinstance(missing, InvalidDpopProof) and missing.reason is Reason.DPOP_MISSING_PROOF
    proof = key.proof(token="t")
    await bind.check(who, credential, scope(proof))
    assert (await refusal(bind, who, credential, scope(proof))).reason is Reason.DPOP_REPLAY
