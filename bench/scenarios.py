"""The load scenarios: what wrk sends in each, with which tokens, and to which targets."""

from __future__ import annotations

from dataclasses import dataclass

CALLERS = ("A", "I", "B", "C", "C+")  # every target serves the valid calls


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str  # bench/lua/mcp_call.lua's mode
    tokens: str  # which token file (bench/run.py mint_tokens; the DPoP ones are made afresh before each run)
    targets: tuple[str, ...]


SCENARIOS = (
    Scenario("one_token", "one token reused", "call", "one", CALLERS),
    Scenario("rotating", "1000 tokens round-robin", "call", "rotating", CALLERS),
    Scenario("bad_signature", "bad signatures, all distinct", "bad_signature", "one", ("A",)),
    Scenario("forged_payload", "forged payloads, all distinct", "forged_payload", "one", ("A",)),
    Scenario("unknown_kid", "unknown-kid flood, 1000 kids", "reject", "unknown_kid", ("A",)),
    Scenario("opaque_one", "one opaque token reused (introspected once)", "call", "opaque_one", ("I",)),
    Scenario("opaque_rotating", "1000 opaque tokens round-robin", "call", "opaque_1000", ("I",)),
    Scenario("dpop_one", "one DPoP-bound token, a new proof per call", "dpop_call", "dpop_one", ("A",)),
    Scenario("dpop_rotating", "1000 DPoP-bound tokens, a new proof per call", "dpop_call", "dpop_1000", ("A",)),
    Scenario("bad_proof", "DPoP proofs with bad signatures, all distinct", "bad_proof", "dpop_bad", ("A",)),
)
NAMES = tuple(scenario.name for scenario in SCENARIOS)


def select(names: str) -> list[Scenario]:
    """The scenarios named in a comma-separated list, in their usual order; ValueError for an unknown name."""
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    if not wanted:
        raise ValueError("no scenario named")
    if unknown := wanted - set(NAMES):
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]
