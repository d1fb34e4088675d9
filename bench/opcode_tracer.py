"""Counts the Python bytecodes each function executes, between two signals. Loaded into a server by bench.opcodes
(through a `sitecustomize`), never by the product.

SIGUSR1 starts counting on the main thread (where the event loop runs), SIGUSR2 stops and writes the counts as JSON
to the file `install` was given. Tracing makes the server many times slower; it counts work, not time.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

Site = tuple[str, str, int]  # a code object: file, function, first line


class OpcodeCounter:
    """Bytecodes executed and calls made (resumptions of coroutines included) per code object."""

    def __init__(self) -> None:
        self.opcodes: Counter[Site] = Counter()
        self.calls: Counter[Site] = Counter()

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            self.opcodes[(code.co_filename, code.co_name, code.co_firstlineno)] += 1
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        self.calls[(code.co_filename, code.co_name, code.co_firstlineno)] += 1
        return self._local

    def start(self) -> None:
        self.opcodes.clear()
        self.calls.clear()
        sys.settrace(self._global)

    def stop(self) -> None:
        sys.settrace(None)

    def as_json(self) -> dict[str, list[list[Any]]]:
        return {
            "opcodes": [[*site, count] for site, count in self.opcodes.items()],
            "calls": [[*site, count] for site, count in self.calls.items()],
        }


def install(output: Path) -> OpcodeCounter:
    """SIGUSR1 starts counting, SIGUSR2 stops it and writes `output` (written whole, then renamed into place)."""
    counter = OpcodeCounter()

    def start(signum: int, frame: FrameType | None) -> None:
        counter.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        counter.stop()
        partial = output.with_suffix(".partial")
        partial.write_text(json.dumps(counter.as_json()))
        partial.replace(output)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return counter
