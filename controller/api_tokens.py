"""The token routes of the operator API under /api/v1/tokens (admin only): list, create, rotate, revoke.
A new or rotated token is shown once, in the answer that makes it; a token may expire
(``expires_in_s``); every change is audited (:class:`~sparcs.controller.auth.TokenBook`)."""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sparcs.controller.api_deps import Admin, Tokens
from sparcs.controller.auth import MAX_EXPIRES_IN_S, Role
from sparcs.controller.commands import CommandError
from sparcs.controller.read_model import iso

router = APIRouter(prefix="/api/v1/tokens", tags=["admin"])
TokenName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.-]{1,64}$", max_length=64)]
ExpiresIn = Field(
    default=None, ge=60, le=MAX_EXPIRES_IN_S, description="seconds the token is valid; default: no expiry"
)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    role: Role
    expires_in_s: int | None = ExpiresIn


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in_s: int | None = ExpiresIn


def _expiry(value: float | None) -> str | None:
    return None if value is None else iso(value)


@router.get("")
async def tokens(_: Admin, book: Tokens) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "role": t.role, "created_at": iso(t.created_at), "expires_at": _expiry(t.expires_at)}
        for t in book.live()
    ]


@router.post("", status_code=201)
async def add_token(body: TokenRequest, p: Admin, book: Tokens) -> JSONResponse:
    """Create a token; the response is the only time it is shown."""
    try:
        token = book.add(body.name, body.role, p.name, body.expires_in_s)
    except ValueError as exc:
        raise CommandError("name", str(exc)) from None
    return JSONResponse(status_code=201, content={"name": body.name, "role": body.role, "token": token})


@router.post("/{name}/rotate", status_code=201)
async def rotate_token(name: TokenName, body: RotateRequest, p: Admin, book: Tokens) -> JSONResponse:
    """A new secret for the token ``name`` (same role); the old one stops working at once. The
    response is the only time the new token is shown."""
    token = book.rotate(name, p.name, body.expires_in_s)
    if token is None:
        raise HTTPException(404, f"no token named '{name}'")
    return JSONResponse(status_code=201, content={"name": name, "token": token})


@router.delete("/{name}")
async def revoke_token(name: TokenName, p: Admin, book: Tokens) -> dict[str, Any]:
    if not book.revoke(name, p.name):
        raise HTTPException(404, f"no token named '{name}'")
    return {"revoked": name}
