"""bench.processes' arguments: the checkouts it compares and the bounds of a run, checked before anything starts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bench.processes import PROJECT_ROOT, Kind, kind_of, kinds_of, main


def parsed(*trees: str, noauth: tuple[str, ...] = ()) -> argparse.Namespace:
    return argparse.Namespace(tree=list(trees), noauth_tree=list(noauth))


def test_without_trees_the_kinds_are_this_checkout_with_and_without_auth():
    assert kinds_of(parsed()) == [Kind("A", PROJECT_ROOT), Kind("B", PROJECT_ROOT, auth=False)]


def test_a_tree_is_a_named_checkout_with_its_own_server(tmp_path: Path):
    (tmp_path / "server.py").write_text("")
    kinds = kinds_of(parsed(f"old={tmp_path}", noauth=(f"plain={tmp_path}",)))
    assert kinds == [Kind("old", tmp_path.resolve()), Kind("plain", tmp_path.resolve(), auth=False)]
    assert kinds[0].command() == [sys.executable, str(tmp_path.resolve() / "server.py")]
    assert kinds[1].command() == [sys.executable, "-m", "bench.noauth_server"]


@pytest.mark.parametrize("spec", ["no-equals-sign", "=somewhere", "name={missing}"])
def test_a_tree_that_is_not_a_named_checkout_is_refused(spec: str, tmp_path: Path):
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=PATH"):
        kind_of(spec.format(missing=tmp_path / "nowhere"), auth=True)


def test_two_kinds_of_one_name_are_refused(tmp_path: Path):
    (tmp_path / "server.py").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="names must differ"):
        kinds_of(parsed(f"same={tmp_path}", noauth=(f"same={tmp_path}",)))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--processes", "0"], "--processes must be between 1 and 16"),
        (["--rounds", "0"], "--rounds must be between 1 and 100"),
        (["--connections", "0"], "--connections must be between 1 and 256"),
        (["--seconds", "0"], "--seconds must be more than 0"),
        (["--seconds", "61"], "--seconds must be more than 0"),
        (["--mode", "bad_signature"], "needs servers with auth"),
        (["--tree", "nothing"], "NAME=PATH"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(arguments: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
