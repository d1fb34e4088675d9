"""bench.instructions' arithmetic and checks, without valgrind: cachegrind's output read right, a call's cost taken
as the difference of two runs, and a wrong answer never counted as a call."""

from __future__ import annotations

import json

import pytest

from bench.instructions import (
    PAGE_SIMULATION,
    Counts,
    call_body,
    largest_differences,
    main,
    plan,
    print_differences,
    read_counts,
    right_answer,
    split,
)

CACHEGRIND_OUTPUT = """\
desc: I1 cache:         32768 B, 64 B, 8-way associative
cmd: python server.py
events: Ir Bc Bcm
fl=/usr/lib/python3.11/ceval.c
fn=_PyEval_EvalFrameDefault
10 5 2 1
summary: 1500000 20000 300
"""


def test_read_counts_takes_the_summary_under_its_event_names():
    assert read_counts(CACHEGRIND_OUTPUT).events == {"Ir": 1_500_000, "Bc": 20_000, "Bcm": 300}


@pytest.mark.parametrize(
    "text",
    ["", "events: Ir\n", "summary: 12\n", "events: Ir Bc\nsummary: 12\n", "events: Ir\nsummary: twelve\n"],
)
def test_read_counts_refuses_what_is_not_a_complete_cachegrind_file(text: str):
    with pytest.raises(ValueError):
        read_counts(text)


PER_FUNCTION_OUTPUT = """\
events: Ir Bc
fl=/build/Objects/obmalloc.c
fn=_PyObject_Free
1565 40 3
1566 2
fl=/build/Python/ceval.c
fn=_PyEval_EvalFrameDefault
10 500 7
fn=helper
11 6 0
fl=/build/Include/object.h
fn=_PyEval_EvalFrameDefault
20 30 1
fl=/build/Objects/obmalloc.c
fn=_PyObject_Free
1600 8 1
summary: 586 12
"""


def test_read_counts_adds_up_each_functions_instructions_per_source_file():
    counts = read_counts(PER_FUNCTION_OUTPUT)
    assert counts.functions == {
        "_PyObject_Free (obmalloc.c)": 50,  # two blocks of the same function, added up
        "_PyEval_EvalFrameDefault (ceval.c)": 500,
        "helper (ceval.c)": 6,
        "_PyEval_EvalFrameDefault (object.h)": 30,  # code inlined from a header: kept apart
    }
    assert sum(counts.functions.values()) == counts.events["Ir"]


def test_functions_are_read_only_when_instructions_are_the_first_event():
    assert read_counts(PER_FUNCTION_OUTPUT.replace("events: Ir Bc", "events: Bc Ir")).functions == {}


def test_functions_per_call_counts_a_function_seen_in_one_run_only():
    measured = Counts({"Ir": 0}, {"f (a.c)": 6000, "g (a.c)": 2000})
    baseline = Counts({"Ir": 0}, {"f (a.c)": 2000, "h (b.c)": 1000})
    assert measured.functions_per_call(baseline, 2000) == {"f (a.c)": 2.0, "g (a.c)": 1.0, "h (b.c)": -0.5}


def test_largest_differences_come_first_whatever_their_sign():
    first = {"a": 10.0, "b": 5.0, "c": 1.0}
    second = {"a": 9.0, "b": 8.0, "d": 2.5}
    assert largest_differences(first, second, 3) == [("b", -3.0), ("d", -2.5), ("a", 1.0)]
    assert largest_differences(first, second, 0) == []
    assert [name for name, _ in largest_differences(first, second, 10)] == ["b", "d", "a", "c"]


def test_per_call_is_the_difference_over_the_measured_calls():
    measured = Counts({"Ir": 9_000_000, "Bcm": 5_000})
    baseline = Counts({"Ir": 5_000_000, "Bcm": 3_000})
    assert measured.per_call(baseline, 2000) == {"Ir": 2000.0, "Bcm": 1.0}


def test_plan_warms_up_as_asked_and_measures_the_asked_tokens():
    rotating = [f"t{index}" for index in range(5)]
    warm, measured = plan("one", rotating, "rotating", "one_token")
    assert warm[:5] == rotating and set(warm[5:]) == {"one"} and measured == ["one"]
    warm, measured = plan("one", rotating, "one_token", "rotating")
    assert set(warm) == {"one"} and len(warm) == len(rotating) + 200 and measured == rotating


def test_only_the_right_sum_for_the_right_id_is_a_right_answer():
    body = json.loads(call_body(7))
    assert body["id"] == 7 and body["params"]["arguments"] == {"a": 7, "b": 0.5}
    good = {"jsonrpc": "2.0", "id": 7, "result": {"structuredContent": {"result": 7.5}}}
    assert right_answer(json.dumps(good).encode(), 7)
    assert not right_answer(json.dumps(good).encode(), 8)  # another request's answer
    assert not right_answer(json.dumps({**good, "result": {"structuredContent": {"result": 8}}}).encode(), 7)
    assert not right_answer(b'{"jsonrpc": "2.0", "id": 7, "error": {"code": -32602}}', 7)
    assert not right_answer(b"not json", 7)
    assert not right_answer(b'{"id": 7, "result": [7.5]}', 7)
    assert not right_answer(b"[7.5]", 7)


@pytest.mark.parametrize(("count", "parts"), [(2000, 8), (2001, 8), (7, 3), (0, 4), (5, 1)])
def test_split_shares_every_call_out_once_and_evenly(count: int, parts: int):
    shares = split(count, parts)
    assert len(shares) == parts and sum(shares) == count
    assert max(shares) - min(shares) <= 1


def test_the_page_simulation_has_4_kib_lines_and_the_tlbs_entries():
    geometry = {
        option.split("=")[0]: [int(part) for part in option.split("=")[1].split(",")] for option in PAGE_SIMULATION
    }
    assert set(geometry) == {"--I1", "--D1", "--LL"}
    assert all(line == 4096 for _, _, line in geometry.values())
    entries = {name: size // line for name, (size, _, line) in geometry.items()}
    assert entries == {"--I1": 128, "--D1": 64, "--LL": 1536}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--connections", "0"], "--connections must be between 1 and 64"),
        (["--connections", "65"], "--connections must be between 1 and 64"),
        (["--functions", "-1"], "--functions must be between 0 and 1000"),
        (["--functions", "1001"], "--functions must be between 0 and 1000"),
        (["--pages", "--last-level", "2097152,16,64"], "--pages and --last-level are two different simulations"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_differences_table_shows_each_function_in_both_servers(capsys):
    print_differences("instructions", ("A", {"f (a.c)": 1500.0, "g (a.c)": 10.0}), ("B", {"f (a.c)": 1000.0}), 5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "functions whose instructions per call differ most (A - B, A, B):"
    assert lines[1].split() == ["+500", "1,500", "1,000", "f", "(a.c)"]
    assert lines[2].split() == ["+10", "10", "0", "g", "(a.c)"]
    assert len(lines) == 3
