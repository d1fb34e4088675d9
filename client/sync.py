"""SyncTokenManager: a TokenManager for plain scripts, driven on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from client.errors import TokenEndpointError
from client.token_manager import TokenManager

_T = TypeVar("_T")


class SyncTokenManager:
    """Blocking `get_token()` / `invalidate()` for code without an event loop (or inside someone else's).

    The wrapped TokenManager runs only on this object's private loop, so give it a TokenManager of its
    own. `close()` (or a `with` block) stops the thread; a forgotten one is a daemon and never blocks exit.
    """

    def __init__(self, manager: TokenManager, *, wait_seconds: float = 300.0) -> None:
        self.manager = manager
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SyncTokenManager({self.manager!r})"

    def __enter__(self) -> SyncTokenManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def get_token(self, *, force_refresh: bool = False) -> str:
        return self._run(self.manager.get_token(force_refresh=force_refresh))

    def invalidate(self, token: str | None = None) -> None:
        self._run(self.manager.invalidate(token))

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread, self._closed = None, None, True
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this SyncTokenManager is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="token-manager-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        try:
            loop = self._running_loop()
        except RuntimeError:
            coroutine.close()
            raise
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout=self._wait_seconds)
        except TimeoutError:
            future.cancel()
            raise TokenEndpointError(f"no token within {self._wait_seconds:g} s") from None
