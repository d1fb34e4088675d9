"""bench.opcodes' tracer and arithmetic, without starting servers: bytecodes counted per function, exactly and
only while tracing is on, written whole on the stop signal, and shown per call."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from bench.opcode_tracer import OpcodeCounter, install
from bench.opcodes import main, per_call, short_path, site_customize
from bench.run import PROJECT_ROOT

# The tracer replaces whatever trace function is set (a debugger's, coverage's): not under one.
pytestmark = pytest.mark.skipif(sys.gettrace() is not None, reason="a trace function is already set")


def loop(times: int) -> int:
    total = 0
    for index in range(times):
        total += index
    return total


def opcodes_of(counter: OpcodeCounter, function: object) -> int:
    code = function.__code__  # type: ignore[attr-defined]
    return counter.opcodes[(code.co_filename, code.co_name, code.co_firstlineno)]


def counted(*times: int) -> OpcodeCounter:
    counter = OpcodeCounter()
    counter.start()
    try:
        for each in times:
            loop(each)
    finally:
        counter.stop()
    return counter


def test_the_counter_counts_each_functions_bytecodes_and_calls_while_on():
    code = loop.__code__
    site = (code.co_filename, code.co_name, code.co_firstlineno)
    both, one = counted(10, 20), counted(20)
    assert both.calls[site] == 2 and one.calls[site] == 1
    assert opcodes_of(both, loop) > opcodes_of(one, loop) > 20  # 30 iterations take more bytecodes than 20
    before = opcodes_of(one, loop)
    loop(5)
    assert opcodes_of(one, loop) == before  # off again
    assert sys.gettrace() is None


def test_start_begins_afresh():
    counter = counted(100)
    counter.start()
    counter.stop()
    code = loop.__code__
    assert opcodes_of(counter, loop) == 0
    assert (code.co_filename, code.co_name, code.co_firstlineno) not in counter.calls


def test_the_count_is_exact_from_one_run_to_the_next():
    assert opcodes_of(counted(50), loop) == opcodes_of(counted(50), loop) > 50


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_the_signals_start_and_stop_it_and_the_counts_are_written_whole(tmp_path: Path):
    output = tmp_path / "counts.json"
    previous = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGUSR2)
    try:
        install(output)
        os.kill(os.getpid(), signal.SIGUSR1)
        loop(10)
        os.kill(os.getpid(), signal.SIGUSR2)
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGUSR1, previous[0])
        signal.signal(signal.SIGUSR2, previous[1])
    dump = json.loads(output.read_text())
    assert not output.with_suffix(".partial").exists()
    names = {function for _, function, _, _ in dump["opcodes"]}
    assert "loop" in names
    assert {function for _, function, _, _ in dump["calls"]} >= {"loop"}


def test_per_call_divides_by_the_calls_and_adds_up_code_objects_of_one_name():
    dump = {
        "opcodes": [
            [f"{PROJECT_ROOT}/auth/middleware.py", "__call__", 200, 3000],
            ["/x/lib/python3.11/site-packages/starlette/routing.py", "app", 685, 600],
            [f"{PROJECT_ROOT}/auth/middleware.py", "__call__", 200, 300],
        ],
        "calls": [[f"{PROJECT_ROOT}/auth/middleware.py", "__call__", 200, 30]],
    }
    assert per_call(dump, 300, PROJECT_ROOT) == {
        "auth/middleware.py:__call__:200": 11.0,
        "starlette/routing.py:app:685": 2.0,
    }
    assert per_call(dump, 30, PROJECT_ROOT, "calls") == {"auth/middleware.py:__call__:200": 1.0}


def test_short_paths_name_the_package_the_standard_library_or_the_checkout():
    root = Path("/tmp/before")
    assert short_path("/v/lib/python3.11/site-packages/mcp/server/runner.py", root) == "mcp/server/runner.py"
    assert short_path("/usr/lib/python3.11/asyncio/tasks.py", root) == "stdlib/asyncio/tasks.py"
    assert short_path("/tmp/before/auth/scope_gate.py", root) == "auth/scope_gate.py"
    assert short_path(f"{PROJECT_ROOT}/auth/scope_gate.py", PROJECT_ROOT) == "auth/scope_gate.py"
    assert short_path("/tmp/before-not/auth/x.py", root) == "/tmp/before-not/auth/x.py"
    assert short_path("<frozen importlib._bootstrap>", root) == "<frozen importlib._bootstrap>"


def test_the_sitecustomize_installs_the_tracer_for_its_output(tmp_path: Path):
    text = site_customize(tmp_path / "A.json")
    compile(text, "sitecustomize.py", "exec")
    assert "from opcode_tracer import install" in text
    assert repr(str(tmp_path / "A.json")) in text


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--count", "0", "--count must be between 1 and 10000"),
        ("--count", "10001", "--count must be between 1 and 10000"),
        ("--functions", "-1", "--functions must be between 0 and 1000"),
    ],
)
def test_arguments_out_of_range_are_refused_before_anything_starts(option: str, value: str, message: str, capsys):
    with pytest.raises(SystemExit) as exited:
        main([option, value])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
