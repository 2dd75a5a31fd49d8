"""The operator API: FastAPI under /api/v1 (OpenAPI docs at /docs, from local files), plus /healthz, /readyz, /metrics.

:func:`create_app` builds the app of one controller: it puts the read model
(:class:`~sparcs.controller.read_model.ControllerView`), the command path
(:class:`~sparcs.controller.operations.Operations`) and the token book
(:class:`~sparcs.controller.auth.TokenBook`) on ``app.state``, where the providers of
:mod:`~sparcs.controller.api_deps` hand them to the routes; installs the error handlers; and
includes the routers (:mod:`~sparcs.controller.api_probes`, :mod:`~sparcs.controller.api_read`,
:mod:`~sparcs.controller.api_control`, :mod:`~sparcs.controller.api_commands`,
:mod:`~sparcs.controller.api_tokens`, :mod:`~sparcs.controller.api_admin`), the docs
(:mod:`~sparcs.controller.api_docs`) and the dashboard.

Every request first meets :class:`~sparcs.controller.api_headers.SecurityHeaders` (security
headers, request id) and :class:`~sparcs.controller.api_limits.RequestLimits` (body size and time,
a token on every write). Failed sign-ins are limited per client address (429, ``Retry-After``).
Bearer tokens with roles (:mod:`sparcs.controller.auth`): viewer reads, operator also commands,
admin also manages tokens and reloads the configuration. Every command is persisted with its
audit entry before it is acknowledged. Invalid requests get a 422 whose ``fields`` name each
offending field, and change nothing; a bug answers 503 and is logged, never a traceback.

Output: powers in W with the signs of docs/definitions.md "Signs" (``grid_w`` > 0 import,
``battery_w`` > 0 discharge, ``export_w`` ≥ 0), SoC fractions 0..1, timestamps ISO 8601 in UTC with
offset; input timestamps must carry an offset (docs/definitions.md "Time").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparcs.controller import api_admin, api_commands, api_control, api_groups, api_probes, api_read, api_tokens
from sparcs.controller.api_docs import mount_docs
from sparcs.controller.api_headers import SecurityHeaders
from sparcs.controller.api_limits import RequestLimits
from sparcs.controller.auth import SignInLimiter, TokenBook
from sparcs.controller.commands import CommandError
from sparcs.controller.cycle import Controller
from sparcs.controller.read_model import ControllerView
from sparcs.controller.reload import Reloader

log = logging.getLogger("sparcs.api")


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'points', 0, 'start') → 'points[0].start'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def error_response(status: int, fields: list[dict[str, str]]) -> JSONResponse:
    text = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return JSONResponse(status_code=status, content={"error": f"invalid request: {text}", "fields": fields})


def count_command(request: Request, result: str) -> None:
    """Count a command the API refused (``rejected``: invalid, ``denied``: not authorised) in the metrics."""
    path = request.url.path
    if path.startswith("/api/v1/commands") and request.method in ("POST", "DELETE"):
        kind = "cancel" if request.method == "DELETE" else path.rsplit("/", 1)[-1]
        view: ControllerView = request.app.state.view
        view.metrics.commands.labels(kind, result).inc()


async def invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 naming every offending field of a request that does not validate."""
    assert isinstance(exc, RequestValidationError)
    count_command(request, "rejected")
    fields = []
    for e in exc.errors():
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        loc = e.get("loc", ())
        if e.get("type") == "json_invalid":
            msg, loc = "body is not valid JSON", ("body",)
        fields.append({"field": field_name(loc), "message": msg})
    return error_response(422, fields)


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """422 naming the field of a request the controller cannot apply."""
    assert isinstance(exc, CommandError)
    return error_response(422, [{"field": exc.field, "message": exc.message}])


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """An HTTP error as ``{"error": ...}``; refused commands (401, 403) are counted."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (401, 403, 429):
        count_command(request, "denied")
    return JSONResponse(status_code=exc.status_code, content={"error": exc.detail}, headers=exc.headers)


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The store failed this request (full, read-only, locked, unreachable): 503, nothing acknowledged,
    logged in one line (the store's alarm and /readyz say it too)."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("store failed %s %s: %s", request.method, request.url.path, first)
    return JSONResponse(
        status_code=503,
        content={"error": "the store does not answer or take writes now; nothing was stored: try again later"},
    )


async def last_resort(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not a user error: log it with its traceback, answer cleanly, keep serving."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=503, content={"error": "the controller could not answer this request; see its log"})


def create_app(ctl: Controller, reloader: Reloader | None = None) -> FastAPI:
    """The API of one controller. Reads go through its read model, commands through its operations;
    ``reloader``: the fleet file's reload (POST /api/v1/admin/reload), None when there is no file."""
    app = FastAPI(
        title="SPARCS operator API",
        version="1",
        description="Swarm-plant controller: fleet state, plans, history, alarms, audit log and operator commands.",
        docs_url=None,  # served from local files by api_docs
        redoc_url=None,
    )
    app.state.view = ControllerView(ctl)
    app.state.operations = ctl.operations
    app.state.controller = ctl
    app.state.reloader = reloader
    app.state.tokens = TokenBook(ctl.store, ctl.clock.now)
    app.state.signins = SignInLimiter(ctl.cfg.api.signin_max_failures, ctl.cfg.api.signin_window_s, time.monotonic)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(CommandError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SQLAlchemyError, store_unavailable)
    app.add_exception_handler(Exception, last_resort)
    api = ctl.cfg.api
    app.add_middleware(RequestLimits, max_body_bytes=api.max_body_kib * 1024, body_timeout_s=api.body_timeout_s)
    app.add_middleware(SecurityHeaders)  # outermost: also on the answers RequestLimits gives
    routers = (api_probes, api_read, api_groups, api_control, api_commands, api_tokens, api_admin)
    for module in routers:
        app.include_router(module.router)
    mount_docs(app)
    from sparcs.controller.dashboard import mount_dashboard  # the operator page at / (owned by controller/dashboard/)

    mount_dashboard(app)
    return app
