"""Keeps each MCP request's objects out of reference cycles, so they are freed when the request ends.

The SDK's `ServerRunner` (one per request on the stateless and 2026-07-28 paths) exposes its handlers through
`functools.cached_property`: the first access stores the bound method `runner._on_request` in `runner.__dict__`,
and the bound method refers back to the runner. That cycle holds the runner, its `Connection` and what the
connection holds (client info, capabilities, events, an exit stack: 16 objects per call) until the cyclic
collector next runs. Until then that memory cannot be reused for the next request's objects, so the working set
spreads; in `bench/` the fix took 4 to 6 % of the CPU of every tool call (see docs/performance.md).

A plain property returns an equal bound method each time without storing it. Each SDK caller reads the attribute
once and calls or passes on what it got, so nothing depends on getting the same object twice. Nothing is changed
if the SDK no longer defines these attributes as cached properties. tests/web/test_sdk_cycles.py checks that a
tool call leaves no cyclic garbage.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from operator import attrgetter
from typing import Any

from mcp.server.runner import ServerRunner

# cached property of ServerRunner -> the method it caches, bound
_RUNNER_HANDLERS = {"on_request": "_on_request", "on_notify": "_on_notify"}


def uncached_handlers(cls: type, handlers: dict[str, str]) -> list[str]:
    """Replace each `cached_property` that caches a bound method of `cls` by a property; the names replaced."""
    replaced = []
    for name, method in handlers.items():
        current = cls.__dict__.get(name)
        if isinstance(current, cached_property) and callable(getattr(cls, method, None)):
            getter: Callable[[Any], Any] = attrgetter(method)
            setattr(cls, name, property(getter, doc=f"`self.{method}`, bound afresh on each access"))
            replaced.append(name)
    return replaced


def break_runner_cycles() -> list[str]:
    """Apply the fix to the SDK's ServerRunner (idempotent); the attributes it changed this time."""
    return uncached_handlers(ServerRunner, _RUNNER_HANDLERS)
