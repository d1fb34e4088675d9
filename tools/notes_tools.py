"""The notes tools: each caller sees only the notes of its own (issuer, subject)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field, StrictInt, ValidatorFunctionWrapHandler, WrapValidator

from tools.caller import current_principal
from tools.notes_store import Note, NotesError, NotesStorageError, NotesStore, Owner

logger = logging.getLogger(__name__)

NoteId = Annotated[str, Field(description="the id returned by create_note or list_notes")]


def _null_means_unchanged(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    return None if value is None else handler(value)


# The type is `str` (null still accepted, meaning "unchanged") on purpose: the SDK JSON-decodes string
# arguments of any other declared type, so with `str | None` content like '[1, 2]' or 'null' would be
# turned into a list or None before the tool saw it.
OptionalText = Annotated[str, WrapValidator(_null_means_unchanged), Field(description="omit (or null) to keep")]


class NoteView(BaseModel):
    id: str
    title: str
    content: str
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str = Field(description="ISO 8601, UTC")


class NoteList(BaseModel):
    notes: list[NoteView]
    next_cursor: str | None = Field(description="pass it back as cursor for the next page; null on the last page")


class DeletedNote(BaseModel):
    id: str
    deleted: bool


def _view(note: Note) -> NoteView:
    return NoteView(
        id=note.id,
        title=note.title,
        content=note.content,
        created_at=note.created_at.isoformat().replace("+00:00", "Z"),
        updated_at=note.updated_at.isoformat().replace("+00:00", "Z"),
    )


def _owner(ctx: Context) -> Owner:
    return current_principal(ctx).owner_key


@contextlib.contextmanager
def _as_tool_errors() -> Iterator[None]:
    try:
        yield
    except NotesError as exc:
        raise ToolError(str(exc)) from None
    except NotesStorageError as exc:
        logger.error("notes store failure: %s", exc)  # paths and sqlite detail: for operators only
        raise ToolError("the notes store is unavailable; try again later") from None


def notes_tools(store: NotesStore) -> dict[str, Callable[..., Any]]:
    """The five tools, bound to one store; returned by name for the registry to declare scopes."""

    async def create_note(
        title: Annotated[str, Field(description="a short, non-empty title")],
        content: Annotated[str, Field(description="the note's text")],
        ctx: Context,
    ) -> NoteView:
        """Create a note that only you can see."""
        with _as_tool_errors():
            return _view(await store.create(_owner(ctx), title, content))

    async def read_note(note_id: NoteId, ctx: Context) -> NoteView:
        """Read one of your notes."""
        with _as_tool_errors():
            return _view(await store.get(_owner(ctx), note_id))

    async def list_notes(
        ctx: Context,
        limit: Annotated[StrictInt, Field(description="notes per page")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page")] = None,
    ) -> NoteList:
        """List your notes, oldest first, a page at a time."""
        with _as_tool_errors():
            page = await store.list(_owner(ctx), limit=limit, cursor=cursor)
        return NoteList(notes=[_view(note) for note in page.notes], next_cursor=page.next_cursor)

    async def update_note(
        note_id: NoteId,
        ctx: Context,
        title: OptionalText = None,
        content: OptionalText = None,
    ) -> NoteView:
        """Change the title and/or content of one of your notes."""
        with _as_tool_errors():
            return _view(await store.update(_owner(ctx), note_id, title=title, content=content))

    async def delete_note(note_id: NoteId, ctx: Context) -> DeletedNote:
        """Delete one of your notes for good."""
        with _as_tool_errors():
            await store.delete(_owner(ctx), note_id)
        return DeletedNote(id=note_id, deleted=True)

    tools = (create_note, read_note, list_notes, update_note, delete_note)
    return {tool.__name__: tool for tool in tools}
