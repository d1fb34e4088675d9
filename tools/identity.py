"""The `get_me` tool: who is calling, as the verified token says. Never the token itself."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from auth.principal import Principal
from tools.caller import current_principal


class Identity(BaseModel):
    user_id: str = Field(description="the token's subject (sub); a machine client's subject is usually its client id")
    client_id: str | None = Field(description="the OAuth client the token was issued to")
    issuer: str
    audience: list[str]
    scopes: list[str]
    issued_at: str | None = Field(description="ISO 8601, UTC")
    expires_at: str = Field(description="ISO 8601, UTC")
    token_id: str | None = Field(description="the token's jti, if it has one")
    token_type: Literal["machine", "user"] = Field(
        description="machine: a client-credentials token; user: issued on behalf of a person"
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def identity_of(principal: Principal) -> Identity:
    return Identity(
        user_id=principal.subject,
        client_id=principal.client_id,
        issuer=principal.issuer,
        audience=list(principal.audience),
        scopes=sorted(principal.scopes),
        issued_at=_iso(principal.issued_at),
        expires_at=_iso(principal.expires_at) or "",
        token_id=principal.token_id,
        token_type="machine" if principal.is_machine else "user",
    )


async def get_me(ctx: Context) -> Identity:
    """Who is calling: subject, client, issuer, audience, scopes and token lifetime. Needs no scope."""
    return identity_of(current_principal(ctx))
