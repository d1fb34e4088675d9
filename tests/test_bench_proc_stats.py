"""bench.proc_stats: CPU time and RSS read from the text of /proc files, and which CPU runs what."""

from __future__ import annotations

import os

import pytest

from bench.proc_stats import cpu_seconds, parse_cpu_seconds, parse_rss_mib, rss_mib, split_cpus


def stat_line(command: str, utime: int, stime: int) -> str:
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0", str(utime), str(stime), "0", "0"]
    return f"1234 ({command}) " + " ".join(fields) + "\n"


@pytest.mark.parametrize("command", ["python", "a (b) c", "x) 1 2 3 4 5"])
def test_cpu_seconds_are_user_and_system_time_whatever_the_command_name(command: str):
    assert parse_cpu_seconds(stat_line(command, 250, 50), clock_ticks=100) == pytest.approx(3.0)


def test_rss_is_read_in_mib():
    assert parse_rss_mib("Name:\tpython\nVmPeak:\t 9000 kB\nVmRSS:\t   81920 kB\n") == 80.0
    with pytest.raises(ValueError, match="VmRSS"):
        parse_rss_mib("Name:\tkthreadd\n")


def test_this_process_can_be_read():
    assert cpu_seconds(os.getpid()) > 0
    assert rss_mib(os.getpid()) > 1


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [([0, 1], (1, 0)), ([3, 1, 2], (3, 1)), ([0], (None, None)), ([], (None, None))],
)
def test_servers_and_load_get_a_cpu_each_when_there_are_two(cpus: list[int], expected: tuple[int | None, int | None]):
    assert split_cpus(cpus) == expected
