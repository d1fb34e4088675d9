"""bench.fleet end to end at toy size: every setup starts, every answer is checked, the table is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import fleet
from tests import pg

pytestmark = pytest.mark.e2e


def test_percentile_picks_from_the_top() -> None:
    values = [float(value) for value in range(1, 101)]
    assert fleet.percentile(values, 0.99) == 100.0
    assert fleet.percentile(values, 0.5) == 51.0
    assert fleet.percentile([3.0], 0.99) == 3.0


def test_a_tiny_run_prints_both_setups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pg.server_url(tmp_path) as admin_url:
        arguments = ["--database-url", admin_url, "--replicas", "2", "--owners", "3", "--notes-per-owner", "1"]
        assert fleet.main([*arguments, "--readers", "2", "--writers", "2", "--seconds", "0.5"]) == 0
    output = capsys.readouterr().out
    for setup in ("postgres x2", "postgres x1", "sqlite x1"):
        for phase in ("reads (2 clients)", "creates (2 writers)", "mixed (2 clients)"):
            assert f"{setup:<14}{phase}" in output
    assert "read CPU per call, 1 PostgreSQL replica vs 1 SQLite replica" in output
