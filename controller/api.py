"""The operator API: FastAPI under /api/v1 (OpenAPI docs at /docs), plus /healthz, /readyz, /metrics.

Bearer tokens with roles (controller.auth): viewer reads, operator also commands, admin also manages
tokens. Every command is persisted with its audit entry before it is acknowledged. Invalid requests
get a 422 whose ``fields`` name each offending field, and change nothing.

Output: powers in W with DESIGN.md signs (``grid_w`` > 0 import, ``battery_w`` > 0 discharge,
``export_w`` ≥ 0), SoC fractions 0..1, timestamps ISO 8601 in UTC with offset. Input timestamps
must carry an offset.
"""

# No ``from __future__ import annotations``: FastAPI resolves the role dependencies defined inside
# create_app from the live annotations.
import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Annotated, Any, Self

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparcs.config.grid_rules import feed_in_cap_w, installer_ceiling_w, is_curtailing
from sparcs.config.schema import AwareDatetime
from sparcs.controller.auth import Principal, Role, authenticate, create_token
from sparcs.controller.commands import (
    Command,
    CommandError,
    Para14aRequest,
    PauseRequest,
    ScheduleRequest,
    StageRequest,
)
from sparcs.controller.cycle import Controller
from sparcs.controller.metrics import CONTENT_TYPE

log = logging.getLogger("sparcs.api")

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
STALE_POLLS = 3  # data older than this many poll intervals is stale (readyz fails too)
MAX_HISTORY_POINTS = 20_000


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf → null, numpy → Python, tuples → lists (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        return clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


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


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    role: Role


class HistoryQuery(BaseModel):
    """History of the fleet (default), one site or one device, averaged into buckets of ``resolution_s``."""

    model_config = ConfigDict(extra="forbid")
    start: AwareDatetime | None = Field(default=None, description="default: one hour before end")
    end: AwareDatetime | None = Field(default=None, description="default: now")
    resolution_s: int = Field(default=60, ge=1, le=86_400)
    site: str | None = None
    device: str | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.site is not None and self.device is not None:
            raise ValueError("give either site or device, not both")
        return self


def _bucket(rows: list[dict[str, Any]], resolution_s: int, fields: list[str]) -> list[dict[str, Any]]:
    """Mean of each field per bucket of ``resolution_s`` that has samples; None where none had a value."""
    acc: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        b = int(r["ts"] // resolution_s)
        bucket = acc[b]  # a bucket with samples but no known value still shows, as null
        for f in fields:
            v = r.get(f)
            if v is not None:
                bucket[f].append(float(v))
    out = []
    for b in sorted(acc):
        point: dict[str, Any] = {"ts": iso(b * resolution_s)}
        for f in fields:
            values = acc[b][f]
            point[f] = sum(values) / len(values) if values else None
        out.append(point)
    return out


def create_app(ctl: Controller) -> FastAPI:
    """The API of one controller. Reads come from its memory (state, plan) and store (history)."""
    app = FastAPI(
        title="SPARCS operator API",
        version="1",
        description="Swarm-plant controller: fleet state, plans, history, alarms, audit log and operator commands.",
    )
    bearer = HTTPBearer(auto_error=False, description="token from `sparcs token add NAME --role ROLE`")

    def principal(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        if creds is None:
            raise HTTPException(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>' (create one with sparcs token add)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        p = authenticate(ctl.store, creds.credentials)
        if p is None:
            raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return p

    def need(role: Role) -> Callable[[Principal], Principal]:
        def check(p: Annotated[Principal, Depends(principal)]) -> Principal:
            if not p.may(role):
                raise HTTPException(403, f"this needs role '{role}'; token '{p.name}' has role '{p.role}'")
            return p

        return check

    Viewer = Annotated[Principal, Depends(need("viewer"))]
    Operator = Annotated[Principal, Depends(need("operator"))]
    Admin = Annotated[Principal, Depends(need("admin"))]

    def count_command(request: Request, result: str) -> None:
        path = request.url.path
        if path.startswith("/api/v1/commands") and request.method in ("POST", "DELETE"):
            kind = "cancel" if request.method == "DELETE" else path.rsplit("/", 1)[-1]
            ctl.metrics.commands.labels(kind, result).inc()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
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

    @app.exception_handler(CommandError)
    async def refused(request: Request, exc: CommandError) -> JSONResponse:
        return error_response(422, [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (401, 403):
            count_command(request, "denied")
        return JSONResponse(status_code=exc.status_code, content={"error": exc.detail}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def last_resort(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a user error: log it with its traceback, answer cleanly, keep serving.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=503, content={"error": "the controller could not answer this request; see its log"}
        )

    # -- probes and metrics ---------------------------------------------------------------------

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        """Readiness: the store answers and the fleet was polled within three poll intervals."""
        problems = []
        try:
            ctl.store.version()
        except Exception as exc:  # any database error means not ready; the probe reports it
            problems.append(f"store: {exc}")
        now = ctl.clock.now()
        if ctl.last_poll_s is None:
            problems.append("no poll yet")
        elif now - ctl.last_poll_s > STALE_POLLS * ctl.cfg.dispatch.poll_interval_s:
            problems.append(f"last poll {now - ctl.last_poll_s:.0f} s ago")
        status = 200 if not problems else 503
        return JSONResponse(status_code=status, content={"ready": not problems, "problems": problems})

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: open to loopback clients, else a viewer token is needed."""
        client = request.client.host if request.client else ""
        if client not in LOOPBACK:
            creds = await bearer(request)
            need("viewer")(principal(creds))
        return Response(ctl.metrics.render(), media_type=CONTENT_TYPE)

    # -- reading ----------------------------------------------------------------------------------

    v1 = APIRouter(prefix="/api/v1")

    def site_view(site_id: str) -> dict[str, Any]:
        site = ctl.cfg.site(site_id)
        now = ctl.clock.now()
        s = ctl.state.sites.get(site_id) if ctl.state else None
        ceiling_w = installer_ceiling_w(site)
        return {
            "id": site.id,
            "name": site.name,
            "kwp": site.pv.kwp,
            "pv_rating_w": site.pv.rating_w,
            "battery_kwh": site.battery.capacity_kwh if site.battery else None,
            "feed_in_cap_w": feed_in_cap_w(site),
            "stage": ctl.commands.stage(site_id, now),
            "para14a": ctl.commands.para14a(site_id, now),
            "guard_limit_w": ctl.guard_w.get(site_id),
            # a PV limit in force below the installer ceiling: the site is curtailed now
            "curtailed": s is not None and is_curtailing(s.pv_limit_w, ceiling_w),
            "now": s.as_dict() if s else None,
            "devices": [d.id for d in site.devices],
        }

    def device_view(dev_id: str) -> dict[str, Any]:
        site, dev = next(((s, d) for s, d in ctl.cfg.devices() if d.id == dev_id), (None, None))
        if dev is None or site is None:
            raise HTTPException(404, f"unknown device '{dev_id}'; GET /api/v1/devices lists them")
        t = ctl.state.telemetry.get(dev_id) if ctl.state else None
        sp = ctl.setpoints.get(dev_id)
        values = {k: {"value": r.value, "quality": r.quality} for k, r in t.values.items()} if t else {}
        return {
            "id": dev.id,
            "site": site.id,
            "kind": dev.kind,
            "control": dev.control,
            "status": t.status if t else "unknown",
            "read_at": iso(t.read_at) if t else None,
            "last_seen": iso(t.last_good_at) if t else None,
            "error": t.error if t else None,
            "values": values,
            "setpoint": {"pv_limit_w": sp.pv_limit_w, "battery_w": sp.battery_w} if sp else None,
            "actual": {
                "pv_w": values.get("pv_w", {}).get("value"),
                "pv_limit_w": values.get("pv_limit_w", {}).get("value"),
                "battery_w": values.get("battery_w", {}).get("value"),
            },
        }

    def command_view(c: Command) -> dict[str, Any]:
        return {**c.as_dict(), "created_at": iso(c.created_at), "start": iso(c.start_s), "expires_at": iso(c.expires_s)}

    @v1.get("/session", tags=["read"])
    async def session(p: Viewer) -> dict[str, Any]:
        """Who this token belongs to and whether it may send commands (operator or admin)."""
        return {"name": p.name, "role": p.role, "may_command": p.may("operator")}

    @v1.get("/fleet", tags=["read"])
    async def fleet(_: Viewer) -> dict[str, Any]:
        """The fleet now: PV, battery, load, export at the meters, SoC, flexibility, devices online/stale/total."""
        now = ctl.clock.now()
        summary = ctl.state.summary() if ctl.state else None
        if summary:
            summary["ts"] = iso(summary["ts"])
        return clean(
            {
                "now": summary,
                "paused": ctl.commands.paused(now),
                "last_poll": iso(ctl.last_poll_s),
                "last_dispatch": iso(ctl.last_dispatch_s),
                "plan_path": ctl.plan.path if ctl.plan else None,
                "in_fallback": ctl.plan is not None and not ctl.plan.optimal,
                "data_age_s": None if ctl.last_poll_s is None else now - ctl.last_poll_s,
                "data_stale": ctl.last_poll_s is None
                or now - ctl.last_poll_s > STALE_POLLS * ctl.cfg.dispatch.poll_interval_s,
                "schedule_export_w": ctl.commands.schedule_export_w(now),
            }
        )

    @v1.get("/sites", tags=["read"])
    async def sites(_: Viewer) -> list[dict[str, Any]]:
        return clean([site_view(s.id) for s in ctl.cfg.sites])

    @v1.get("/sites/{site_id}", tags=["read"])
    async def site(site_id: str, _: Viewer) -> dict[str, Any]:
        try:
            view = site_view(site_id)
        except KeyError:
            raise HTTPException(404, f"unknown site '{site_id}'; GET /api/v1/sites lists them") from None
        view["devices"] = [device_view(d) for d in view["devices"]]
        return clean(view)

    @v1.get("/devices", tags=["read"])
    async def devices(_: Viewer) -> list[dict[str, Any]]:
        return clean([device_view(d.id) for _s, d in ctl.cfg.devices()])

    @v1.get("/devices/{device_id}", tags=["read"])
    async def device(device_id: str, _: Viewer) -> dict[str, Any]:
        return clean(device_view(device_id))

    @v1.get("/plan", tags=["read"])
    async def plan(_: Viewer) -> dict[str, Any]:
        """The plan in force: per site per quarter-hour PV limit, battery, meter power and SoC."""
        if ctl.plan is None:
            return {"plan": None}
        p = {k: v for k, v in ctl.plan.to_record().items() if k != "forecast"}
        p["start"] = iso(p["start_s"])
        return clean({"plan": p})

    @v1.get("/forecast", tags=["read"])
    async def forecast(_: Viewer) -> dict[str, Any]:
        """The forecasts the plan in force was made with: prices, and per site PV available and load."""
        if ctl.plan is None:
            return {"forecast": None}
        record = ctl.plan.to_record()
        return clean({"start": iso(record["start_s"]), "period_s": record["period_s"], **record["forecast"]})

    @v1.get("/caps", tags=["read"])
    async def caps(_: Viewer) -> dict[str, Any]:
        """The limits in force now per site (W): feed-in cap, connection, installer ceiling, stage, §14a, guard."""
        now = ctl.clock.now()
        out = []
        for s in ctl.cfg.sites:
            out.append(
                {
                    "site": s.id,
                    "feed_in_cap_w": feed_in_cap_w(s),
                    "export_cap_now_w": ctl.export_cap_w(s.id, now),
                    "connection_limit_w": s.grid.connection_limit_w,
                    "installer_ceiling_w": installer_ceiling_w(s),
                    "negative_price_rule": s.grid.negative_price_rule,
                    "stage": ctl.commands.stage(s.id, now),
                    "stage_ceiling_w": ctl.commands.stage_ceiling_w(s.id, now),
                    "para14a_limit_w": ctl.cfg.grid.para14a_limit_w if ctl.commands.para14a(s.id, now) else None,
                    "guard_limit_w": ctl.guard_w.get(s.id),
                }
            )
        return clean(
            {"ts": iso(now), "paused": ctl.commands.paused(now), "price_eur_per_mwh": ctl.price_now(now), "sites": out}
        )

    @v1.get("/history", tags=["read"])
    async def history(q: Annotated[HistoryQuery, Query()], _: Viewer) -> dict[str, Any]:
        """Fleet, site or device history averaged per ``resolution_s``."""
        end_s = q.end.timestamp() if q.end else ctl.clock.now()
        start_s = q.start.timestamp() if q.start else end_s - 3600.0
        if start_s >= end_s:
            raise CommandError("start", "must be before end")
        if (end_s - start_s) / q.resolution_s > MAX_HISTORY_POINTS:
            raise CommandError("resolution_s", f"gives more than {MAX_HISTORY_POINTS} points; choose a coarser one")
        if q.device is not None:
            if q.device not in {d.id for _s, d in ctl.cfg.devices()}:
                raise CommandError("device", f"unknown device '{q.device}'")
            rows = [
                {"ts": r["ts"], **{k: v[0] for k, v in r["values"].items() if v[1] == "good"}}
                for r in ctl.store.device_history(q.device, start_s, end_s)
            ]
            keys = sorted({k for r in rows for k in r if k != "ts"})
            scope: dict[str, str | bool] = {"device": q.device}
        elif q.site is not None:
            if q.site not in {s.id for s in ctl.cfg.sites}:
                raise CommandError("site", f"unknown site '{q.site}'")
            rows = ctl.store.site_history(q.site, start_s, end_s)
            keys = ["pv_w", "battery_w", "grid_w", "load_w", "export_w", "soc", "flex_up_w", "flex_down_w"]
            scope = {"site": q.site}
        else:
            rows = ctl.store.fleet_history(start_s, end_s)
            keys = ["pv_w", "battery_w", "load_w", "grid_w", "export_w", "soc", "flex_up_w", "flex_down_w", "online"]
            scope = {"fleet": True}
        return clean(
            {
                **scope,
                "start": iso(start_s),
                "end": iso(end_s),
                "resolution_s": q.resolution_s,
                "points": _bucket(rows, q.resolution_s, keys),
            }
        )

    @v1.get("/alarms", tags=["read"])
    async def alarms(
        _: Viewer, active_only: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> list[dict[str, Any]]:
        rows = ctl.store.alarms(active_only=active_only, limit=limit)
        return clean([{**a, "raised_at": iso(a["raised_at"]), "cleared_at": iso(a["cleared_at"])} for a in rows])

    @v1.get("/audit", tags=["read"])
    async def audit(
        _: Viewer,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[dict[str, Any]]:
        """Every operator and admin action: who, when, what, result; newest first."""
        return clean([{**a, "ts": iso(a["ts"])} for a in ctl.store.audit_log(limit, before_id)])

    @v1.get("/commands", tags=["read"])
    async def active_commands(_: Viewer) -> list[dict[str, Any]]:
        """Commands in force or waiting to start."""
        return clean([command_view(c) for c in ctl.commands.active(ctl.clock.now())])

    # -- commands ---------------------------------------------------------------------------------

    def accepted(c: Command) -> JSONResponse:
        return JSONResponse(status_code=201, content=clean({"command": command_view(c)}))

    @v1.post("/commands/stage", tags=["commands"], status_code=201)
    async def stage(body: StageRequest, p: Operator) -> JSONResponse:
        """Curtailment stage K1–K4 for all or the named sites until ``expires_at``; the most restrictive wins."""
        return accepted(ctl.operations.submit(body, p.name))

    @v1.post("/commands/para14a", tags=["commands"], status_code=201)
    async def para14a(body: Para14aRequest, p: Operator) -> JSONResponse:
        """§14a EnWG dimming of grid charging for all or the named sites until ``expires_at``."""
        return accepted(ctl.operations.submit(body, p.name))

    @v1.post("/commands/schedule", tags=["commands"], status_code=201)
    async def schedule(body: ScheduleRequest, p: Operator) -> JSONResponse:
        """Fleet export schedule: quarter-hourly export_w (≥ 0) at the meters; replaces older values it covers."""
        return accepted(ctl.operations.submit(body, p.name))

    @v1.post("/commands/pause", tags=["commands"], status_code=201)
    async def pause(body: PauseRequest, p: Operator) -> JSONResponse:
        """Stop the optimizer; stages, caps and the export guard stay enforced."""
        return accepted(ctl.operations.submit(body, p.name))

    @v1.post("/commands/resume", tags=["commands"])
    async def resume(p: Operator) -> dict[str, Any]:
        """Resume automatic control (cancels every pause)."""
        done = ctl.operations.resume(p.name)
        return {"resumed": bool(done), "cancelled": done}

    @v1.post("/commands/dispatch-now", tags=["commands"], status_code=202)
    async def dispatch_now(p: Operator) -> JSONResponse:
        """Plan again at once (ignored while paused: the optimizer is stopped)."""
        requested = ctl.operations.dispatch_now(p.name)
        return JSONResponse(status_code=202, content={"requested": requested, "paused": not requested})

    @v1.delete("/commands/{command_id}", tags=["commands"])
    async def cancel(command_id: int, p: Operator) -> dict[str, Any]:
        """Cancel an active command; the next active one applies."""
        done = ctl.operations.cancel(command_id, p.name)
        if done is None:
            raise HTTPException(404, f"no active command {command_id}; GET /api/v1/commands lists them")
        return {"cancelled": done}

    # -- tokens (admin) ---------------------------------------------------------------------------

    @v1.get("/tokens", tags=["admin"])
    async def tokens(_: Admin) -> list[dict[str, Any]]:
        return [{"name": t.name, "role": t.role, "created_at": iso(t.created_at)} for t in ctl.store.list_tokens()]

    @v1.post("/tokens", tags=["admin"], status_code=201)
    async def add_token(body: TokenRequest, p: Admin) -> JSONResponse:
        """Create a token; the response is the only time it is shown."""
        now = ctl.clock.now()
        try:
            token = create_token(ctl.store, body.name, body.role, now)
        except ValueError as exc:
            raise CommandError("name", str(exc)) from None
        ctl.store.audit_event(ts=now, who=p.name, action="token-add", params=body.model_dump(), result="ok")
        return JSONResponse(status_code=201, content={"name": body.name, "role": body.role, "token": token})

    @v1.delete("/tokens/{name}", tags=["admin"])
    async def revoke_token(name: str, p: Admin) -> dict[str, Any]:
        now = ctl.clock.now()
        if not ctl.store.revoke_token(name):
            raise HTTPException(404, f"no token named '{name}'")
        ctl.store.audit_event(ts=now, who=p.name, action="token-revoke", params={"name": name}, result="ok")
        return {"revoked": name}

    app.include_router(v1)
    from sparcs.controller.dashboard import mount_dashboard  # the operator page at / (owned by controller/dashboard/)

    mount_dashboard(app)
    return app
