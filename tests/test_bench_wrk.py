"""bench.wrk: the command line for a load, and the result line of the Lua script read back (or refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.wrk import LUA_SCRIPT, Load, WrkResult, command, parse_result

FIGURES = {
    "requests": 1000,
    "duration_us": 2_000_000,
    "ok": 998,
    "wrong": 2,
    "wrong_kinds": {"status_401": 2},
    "socket_errors": 1,
    "timeouts": 0,
    "non_2xx_3xx": 2,
    "p50_us": 4100,
    "p90_us": 7000,
    "p99_us": 9800,
    "max_us": 12000,
}


def test_the_result_line_is_found_among_wrks_own_output():
    output = "Running 2s test @ http://127.0.0.1:1\n  1 threads and 16 connections\nWRK_RESULT " + json.dumps(FIGURES)
    result = parse_result(output + "\nRequests/sec: 500.00\n")
    assert result == WrkResult(1000, 2_000_000, 998, 2, 1, 0, 4100, 9800, {"status_401": 2})
    assert result.rps == 500.0
    assert result.failures == 3  # wrong answers, socket errors and timeouts alike


@pytest.mark.parametrize(
    "output",
    [
        "",
        "Requests/sec: 500.00",
        "WRK_RESULT not json",
        "WRK_RESULT []",
        'WRK_RESULT {"requests": 1}',
        "WRK_RESULT " + json.dumps({**FIGURES, "requests": "many"}),
        "WRK_RESULT " + json.dumps({**FIGURES, "wrong_kinds": [1, 2]}),
        "WRK_RESULT " + json.dumps({**FIGURES, "requests": float("inf")}),
    ],
)
def test_output_without_a_readable_result_line_is_refused(output: str):
    with pytest.raises(ValueError, match="WRK_RESULT"):
        parse_result(output)


JSON_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.lists(st.integers())
RESULT_LINES = st.builds(
    lambda figures: "WRK_RESULT " + json.dumps(figures),
    st.dictionaries(st.sampled_from(sorted(FIGURES)), JSON_VALUES) | st.just(FIGURES),
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.builds("WRK_RESULT ".__add__, st.text(max_size=300)) | RESULT_LINES)
def test_any_output_is_read_or_refused_with_value_error(output: str):
    try:
        result = parse_result(output)
    except ValueError:
        return
    assert isinstance(result, WrkResult)


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({key: st.integers(0, 10**12) for key in FIGURES if key != "wrong_kinds"}))
def test_every_figure_is_read_back(figures: dict[str, int]):
    result = parse_result("WRK_RESULT " + json.dumps({**figures, "wrong_kinds": {}}))
    assert (result.requests, result.duration_us, result.p99_us) == (
        figures["requests"],
        figures["duration_us"],
        figures["p99_us"],
    )
    assert result.failures == figures["wrong"] + figures["socket_errors"] + figures["timeouts"]


def test_wrk_is_told_the_mode_tool_tokens_and_limit():
    load = Load(8123, "bad_signature", "add_numbers", Path("/tmp/tokens.txt"))
    line = command(load, connections=16, seconds=2.5, limit=1000)
    assert line[:6] == ["wrk", "-t1", "-c16", "-d2.5s", "--timeout", "5s"]
    assert line[6:] == [
        "-s",
        str(LUA_SCRIPT),
        "http://127.0.0.1:8123",
        "--",
        "bad_signature",
        "add_numbers",
        "/tmp/tokens.txt",
        "1000",
    ]
    assert LUA_SCRIPT.is_file()


def test_a_load_without_tokens_sends_none():
    assert command(Load(1, "call", "add", None), connections=1, seconds=1)[-2:] == ["-", "0"]
