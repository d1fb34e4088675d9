"""What a process spends, from /proc (CPU seconds, resident memory), which CPU it runs on, and the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu_seconds(stat: str, clock_ticks: int = CLOCK_TICKS) -> float:
    """utime + stime from the text of /proc/<pid>/stat (the command name, in parentheses, may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def parse_rss_mib(status: str) -> float:
    """VmRSS from the text of /proc/<pid>/status, in MiB; ValueError if it has none."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """CPU time of the whole process (every thread) so far."""
    return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def rss_mib(pid: int) -> float:
    return parse_rss_mib(Path(f"/proc/{pid}/status").read_text())


def split_cpus(cpus: list[int]) -> tuple[int | None, int | None]:
    """(server CPU, load CPU): the servers on one, wrk and the fake IdP on another, when there are two."""
    ordered = sorted(cpus)
    return (ordered[-1], ordered[0]) if len(ordered) >= 2 else (None, None)


def pin(cpu: int | None) -> dict[str, Any]:
    """Popen arguments that run the child on `cpu` (none: wherever the OS likes)."""
    if cpu is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {cpu})}


def machine() -> str:
    """CPU model, CPU count, kernel, Python and wrk versions: what the figures depend on."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]  # noqa: S607
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
        f"{wrk_version.split(' [')[0]}"
    )
