"""The token routes of the operator API under /api/v1/tokens (admin only): list, create, revoke.
A new token is shown once, in the answer that creates it; every change is audited
(:class:`~sparcs.controller.auth.TokenBook`)."""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sparcs.controller.api_deps import Admin, Tokens
from sparcs.controller.auth import Role
from sparcs.controller.commands import CommandError
from sparcs.controller.read_model import iso

router = APIRouter(prefix="/api/v1/tokens", tags=["admin"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    role: Role


@router.get("")
async def tokens(_: Admin, book: Tokens) -> list[dict[str, Any]]:
    return [{"name": t.name, "role": t.role, "created_at": iso(t.created_at)} for t in book.live()]


@router.post("", status_code=201)
async def add_token(body: TokenRequest, p: Admin, book: Tokens) -> JSONResponse:
    """Create a token; the response is the only time it is shown."""
    try:
        token = book.add(body.name, body.role, p.name)
    except ValueError as exc:
        raise CommandError("name", str(exc)) from None
    return JSONResponse(status_code=201, content={"name": body.name, "role": body.role, "token": token})


@router.delete("/{name}")
async def revoke_token(name: str, p: Admin, book: Tokens) -> dict[str, Any]:
    if not book.revoke(name, p.name):
        raise HTTPException(404, f"no token named '{name}'")
    return {"revoked": name}
