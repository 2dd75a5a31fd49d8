"""The operator API: FastAPI under /api/v1 (OpenAPI docs at /docs, from local files), plus /healthz, /readyz, /metrics.

:func:`build_app` builds the app over a read model
(:class:`~sparcs.controller.read_model.ControllerView`), a way into the command path
(:class:`~sparcs.controller.command_port.CommandPort`) and a token book
(:class:`~sparcs.controller.auth.TokenBook`), which it puts on ``app.state``, where the providers
of :mod:`~sparcs.controller.api_deps` hand them to the routes; installs the error handlers; and
includes the routers (:mod:`~sparcs.controller.api_probes`, :mod:`~sparcs.controller.api_read`,
:mod:`~sparcs.controller.api_control`, :mod:`~sparcs.controller.api_commands`,
:mod:`~sparcs.controller.api_tokens`, :mod:`~sparcs.controller.api_admin`), the docs
(:mod:`~sparcs.controller.api_docs`) and the dashboard. :func:`create_app` is that app over a
controller in this process; `sparcs run` serves the same app from a process of its own over the
snapshot the control process publishes (:mod:`~sparcs.controller.api_process`).

Every request first meets :class:`~sparcs.controller.api_headers.SecurityHeaders` (security
headers, request id) and :class:`~sparcs.controller.api_limits.RequestLimits` (body size and time,
a token on every write). Failed sign-ins are limited per client address (429, ``Retry-After``).
Bearer tokens with roles (:mod:`sparcs.controller.auth`): viewer reads, operator also commands,
admin also manages tokens and reloads the configuration. Every command is persisted with its
audit entry before it is acknowledged. Invalid requests get a 422 whose ``fields`` name each
offending field, and change nothing; a bug answers 503 and is logged, never a traceback; so does
a command the control process does not answer in time.

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

from sparcs.config.schema import ApiConfig
from sparcs.controller import (
    api_admin,
    api_commands,
    api_control,
    api_groups,
    api_probes,
    api_read,
    api_sensorthings,
    api_tokens,
)
from sparcs.controller.api_docs import mount_docs
from sparcs.controller.api_headers import SecurityHeaders
from sparcs.controller.api_limits import RequestLimits
from sparcs.controller.auth import SignInLimiter, TokenBook
from sparcs.controller.command_port import CommandPort, ControlUnavailable, LocalCommands
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
        commands: CommandPort = request.app.state.operations
        commands.refused(kind, result)


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


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 for a command the control process did not answer; the message says what to check."""
    return JSONResponse(status_code=503, content={"error": str(exc)})


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


def build_app(view: ControllerView, commands: CommandPort, tokens: TokenBook, api: ApiConfig) -> FastAPI:
    """The API over a read model, a command port and a token book, with ``api``'s request limits and
    sign-in limit (this app's own: failed sign-ins are counted where they are served)."""
    app = FastAPI(
        title="SPARCS operator API",
        version="1",
        description="Swarm-plant controller: fleet state, plans, history, alarms, audit log and operator commands.",
        docs_url=None,  # served from local files by api_docs
        redoc_url=None,
    )
    app.state.view = view
    app.state.operations = commands
    app.state.tokens = tokens
    app.state.signins = SignInLimiter(api.signin_max_failures, api.signin_window_s, time.monotonic)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(CommandError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ControlUnavailable, unavailable)
    app.add_exception_handler(SQLAlchemyError, store_unavailable)
    app.add_exception_handler(Exception, last_resort)
    app.add_middleware(RequestLimits, max_body_bytes=api.max_body_kib * 1024, body_timeout_s=api.body_timeout_s)
    app.add_middleware(SecurityHeaders)  # outermost: also on the answers RequestLimits gives
    routers = (api_probes, api_read, api_groups, api_control, api_commands, api_tokens, api_admin, api_sensorthings)
    for module in routers:
        app.include_router(module.router)
    mount_docs(app)
    from sparcs.controller.dashboard import mount_dashboard  # the operator page at / (owned by controller/dashboard/)

    mount_dashboard(app)
    return app


def create_app(ctl: Controller, reloader: Reloader | None = None) -> FastAPI:
    """The API of a controller in this process: reads through its read model, commands through its
    operations; ``reloader``: the fleet file's reload (POST /api/v1/admin/reload), None when there is no file."""
    return build_app(
        ControllerView.of(ctl), LocalCommands(ctl, reloader), TokenBook(ctl.store, ctl.clock.now), ctl.cfg.api
    )
