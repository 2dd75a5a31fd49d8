"""The dependencies every route of the operator API takes: the read model, the command path, the
token book, and the principal a bearer token names with the role a route needs.

:func:`~sparcs.controller.api.create_app` puts one :class:`~sparcs.controller.read_model.ControllerView`,
the controller's :class:`~sparcs.controller.operations.Operations` and one
:class:`~sparcs.controller.auth.TokenBook` on ``app.state``; the providers here hand them to the
routes. Roles (:mod:`sparcs.controller.auth`): viewer reads, operator also commands, admin also
manages tokens. A missing, unknown, revoked or expired token is a 401; a token whose role is too low
a 403 that names the role needed; a client address with too many failed sign-ins a 429.

Every provider is a coroutine: FastAPI runs a plain function dependency on its thread pool, a hand-off
per dependency and request that costs more than the work itself (the token check reads the store
at most once per :data:`~sparcs.controller.auth.TOKENS_HELD_S`).
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live
# annotations, including those of the checks :func:`need` builds.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sparcs.controller.api_limits import MISSING_TOKEN
from sparcs.controller.auth import Principal, Role, SignInLimiter, TokenBook
from sparcs.controller.command_port import CommandPort
from sparcs.controller.read_model import ControllerView

bearer = HTTPBearer(auto_error=False, description="token from `sparcs token add NAME --role ROLE`")


async def get_view(request: Request) -> ControllerView:
    """The read model of the controller this app serves."""
    view: ControllerView = request.app.state.view
    return view


async def get_operations(request: Request) -> CommandPort:
    """The one path operator commands take into the controller."""
    ops: CommandPort = request.app.state.operations
    return ops


async def get_tokens(request: Request) -> TokenBook:
    """The API tokens of the controller's store."""
    tokens: TokenBook = request.app.state.tokens
    return tokens


View = Annotated[ControllerView, Depends(get_view)]
Ops = Annotated[CommandPort, Depends(get_operations)]
Tokens = Annotated[TokenBook, Depends(get_tokens)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_signins(request: Request) -> SignInLimiter:
    """The failed sign-ins per client address of this app."""
    limiter: SignInLimiter = request.app.state.signins
    return limiter


def client_address(request: Request) -> str:
    """The client's address as the connection shows it (no proxy header is trusted)."""
    return request.client.host if request.client else "unknown"


def authenticated(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """The principal of the presented bearer token; 401 without one, for an unknown, revoked or
    expired one (which says so); 429 with Retry-After while the client address has failed to sign in
    ``api.signin_max_failures`` times within ``api.signin_window_s``."""
    if creds is None:
        raise HTTPException(401, MISSING_TOKEN, headers={"WWW-Authenticate": "Bearer"})
    limiter, client = get_signins(request), client_address(request)
    wait_s = limiter.retry_after_s(client)
    if wait_s is not None:
        raise HTTPException(
            429,
            f"too many failed sign-ins from {client}; try again in {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    tokens: TokenBook = request.app.state.tokens
    got = tokens.check(creds.credentials)
    if isinstance(got, Principal):
        return got
    limiter.failed(client)
    detail = "unknown or revoked token" if got is None else got.message
    raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def authorized(p: Principal, role: Role) -> Principal:
    """``p`` when its role is at least ``role``; else 403 naming the role needed."""
    if not p.may(role):
        raise HTTPException(403, f"this needs role '{role}'; token '{p.name}' has role '{p.role}'")
    return p


async def principal(request: Request, creds: Credentials) -> Principal:
    """Who sent the request (any role)."""
    return authenticated(request, creds)


def need(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that passes the principal on when its role is at least ``role``."""

    async def check(p: Annotated[Principal, Depends(principal)]) -> Principal:
        return authorized(p, role)

    return check


Viewer = Annotated[Principal, Depends(need("viewer"))]
Operator = Annotated[Principal, Depends(need("operator"))]
Admin = Annotated[Principal, Depends(need("admin"))]
