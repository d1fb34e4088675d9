"""Start-up refusals an operator must act on reach the log as their one line, not as a traceback."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class OneLineStartupRefusal:
    """For the lifespan scope only: when start-up fails with one of `refusals` (e.g. a notes database migrated
    by a newer server), the server is told so in the exception's own words; Starlette would send its traceback,
    which uvicorn logs whole. Any other failure keeps its traceback: that is a bug to read."""

    def __init__(self, app: ASGIApp, *, refusals: tuple[type[BaseException], ...]) -> None:
        self.app = app
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_startup_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)  # sent below, once the exception says which kind of failure it was
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except self.refusals as exc:
            if held:
                held[:] = [{"type": "lifespan.startup.failed", "message": f"start-up refused: {exc}"}]
            raise
        finally:
            for message in held:
                await send(message)
