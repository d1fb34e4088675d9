"""bench.run's arguments and scenarios, checked before anything starts; the memory run's count of answers."""

from __future__ import annotations

import pytest

from bench.memory import parse_mcp_posts
from bench.run import parse_args
from bench.scenarios import NAMES, select
from bench.targets import clean_environment


def test_defaults_are_the_full_run():
    args = parse_args([])
    assert (args.repeats, args.duration, args.connections, args.memory_tokens) == (5, 5.0, 16, 100_000)
    assert [scenario.name for scenario in args.scenarios] == list(NAMES)
    assert args.no_fail_on_floor is False


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--repeats", "0"], "--repeats must be between 1 and 50"),
        (["--connections", "0"], "--connections must be between 1 and 1,024"),
        (["--startups", "21"], "--startups must be between 1 and 20"),
        (["--memory-tokens", "-1"], "--memory-tokens must be between 0 and 1,000,000"),
        (["--cache-entries", "0"], "--cache-entries must be between 1 and"),
        (["--duration", "0"], "--duration must be more than 0 and at most 120"),
        (["--duration", "nan"], "--duration must be more than 0 and at most 120"),
        (["--scenarios", "one_token,everything"], "unknown scenario(s): everything"),
        (["--scenarios", ","], "no scenario named"),
        (["--repeats", "many"], "invalid int value"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(arguments: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(arguments)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_subset_of_scenarios_keeps_the_usual_order():
    assert [scenario.name for scenario in select(" unknown_kid,one_token ")] == ["one_token", "unknown_kid"]


def test_settings_variables_of_the_caller_do_not_reach_the_targets():
    environ = {"PATH": "/usr/bin", "OAUTH_AUDIENCE": "x", "mcp_server_url": "y", "PORT": "1", "HOME": "/root"}
    assert clean_environment(environ) == {"PATH": "/usr/bin", "HOME": "/root"}


def test_the_memory_run_counts_answered_mcp_posts_of_every_status():
    metrics = "\n".join(
        [
            "# TYPE mcp_http_requests_total counter",
            'mcp_http_requests_total{method="POST",route="/mcp",status="200"} 990.0',
            'mcp_http_requests_total{method="POST",route="/mcp",status="401"} 10',
            'mcp_http_requests_total{method="GET",route="/mcp",status="405"} 3',
            'mcp_http_requests_total{method="GET",route="/metrics",status="200"} 7',
        ]
    )
    assert parse_mcp_posts(metrics) == 1000
