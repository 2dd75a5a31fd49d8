"""The read routes of the operator API under /api/v1 (any role from viewer up): who the token is, the
fleet, sites, devices, the plan and its forecast, the caps in force, history, alarms, the audit log
and the commands in force. Every answer comes from the read model
(:class:`~sparcs.controller.read_model.ControllerView`); a route only maps its arguments and 404s. The
two large lists (/sites, /devices) come as JSON the read model renders once per snapshot, and /fleet
(polled most often) as JSON without FastAPI's per-request encoding.

Powers in W with the signs of docs/definitions.md "Signs"; timestamps as in docs/definitions.md
"Time" (ISO 8601 with offset; input without one is refused).
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
import datetime as dt
import json
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sparcs.config.schema import AwareDatetime
from sparcs.controller.api_deps import View, Viewer
from sparcs.controller.listing import (
    DEVICE_SORT_KEYS,
    SITE_SORT_KEYS,
    SITE_STATUSES,
    DeviceFilter,
    PageRequest,
    SiteFilter,
    sort_choices,
)

router = APIRouter(prefix="/api/v1", tags=["read"])


# Every parameter is bounded, so no input reaches the store or the arithmetic outside its range (a
# paging cursor past SQLite's 64-bit integers, a year before 1970): out of range is a 422 naming it.
MAX_ID = 2**63 - 1
"""The largest row id the store holds (SQLite's and PostgreSQL's 64-bit integers)."""
EARLIEST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", max_length=64)]
"""A site or device id, as the fleet file allows them."""


def _in_span(value: dt.datetime) -> dt.datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must lie between {EARLIEST.date()} and {LATEST.date()}")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_in_span)]


def _one_scope_of(query: BaseModel, *names: str) -> None:
    """A query scopes to at most one of ``names`` (the fleet when none is given)."""
    given = [n for n in names if getattr(query, n) is not None]
    if len(given) > 1:
        raise ValueError(f"give either {' or '.join(names)}, not both")


class HistoryQuery(BaseModel):
    """History of the fleet (default), one site or one device, averaged into buckets of ``resolution_s``."""

    model_config = ConfigDict(extra="forbid")
    start: Instant | None = Field(default=None, description="default: one hour before end")
    end: Instant | None = Field(default=None, description="default: now")
    resolution_s: int = Field(default=60, ge=1, le=86_400)
    site: Ident | None = None
    device: Ident | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        _one_scope_of(self, "site", "device")
        return self


@router.get("/session")
async def session(p: Viewer) -> dict[str, Any]:
    """Who this token belongs to and whether it may send commands (operator or admin)."""
    return {"name": p.name, "role": p.role, "may_command": p.may("operator")}


@router.get("/fleet", response_model=dict[str, Any])
async def fleet(_: Viewer, view: View) -> Response:
    """The fleet now: PV, battery, load, export at the meters, SoC, flexibility, devices online/stale/total."""
    return Response(view.fleet_json(), media_type="application/json")


class PageQuery(BaseModel):
    """Paging of a list route: ``offset`` rows skipped, at most ``limit`` (default: all), ``sort`` by a
    key of the route (``-key``: descending). The answer's ``X-Total-Count`` header says how many rows
    match the filters in all."""

    model_config = ConfigDict(extra="forbid")
    offset: int = Field(default=0, ge=0, le=MAX_ID)
    limit: int | None = Field(default=None, ge=1, le=1000)
    sort: str | None = Field(default=None, max_length=64)

    def page(self) -> PageRequest:
        return PageRequest(offset=self.offset, limit=self.limit, sort=self.sort)


def _one_of(value: str | None, choices: list[str] | tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise ValueError(f"'{value}' is not one of: {', '.join(choices)}")
    return value


class SitesQuery(PageQuery):
    """GET /api/v1/sites: ``q`` in the id or name, the sites of a ``group``, a ``status``
    (online, stale, no_data, curtailed, para14a)."""

    q: str | None = Field(default=None, max_length=64)
    group: Ident | None = None
    status: str | None = Field(default=None, description="one of " + ", ".join(SITE_STATUSES))

    @field_validator("sort")
    @classmethod
    def _sort(cls, v: str | None) -> str | None:
        return _one_of(v, sort_choices(list(SITE_SORT_KEYS)))

    @field_validator("status")
    @classmethod
    def _status(cls, v: str | None) -> str | None:
        return _one_of(v, SITE_STATUSES)


class DevicesQuery(PageQuery):
    """GET /api/v1/devices: ``q`` in the id, of one ``site``, ``kind`` or ``status``; ``problems``:
    only devices not online or with a value not good."""

    q: str | None = Field(default=None, max_length=64)
    site: Ident | None = None
    kind: Literal["pv_inverter", "battery", "meter", "hybrid"] | None = None
    status: Literal["online", "stale", "unknown"] | None = None
    problems: bool = False

    @field_validator("sort")
    @classmethod
    def _sort(cls, v: str | None) -> str | None:
        return _one_of(v, sort_choices(list(DEVICE_SORT_KEYS)))


def _total(response: Response, total: int) -> None:
    response.headers["X-Total-Count"] = str(total)


@router.get("/sites", response_model=list[dict[str, Any]])
async def sites(q: Annotated[SitesQuery, Query()], _: Viewer, view: View) -> Response:
    """Every site now (or the page of them the query asks for): ratings, feed-in cap, stage, §14a, guard
    limit, ``curtailed`` (docs/definitions.md "Grid rules"), measurements."""
    if q == SitesQuery():
        return Response(
            view.sites_json(), media_type="application/json", headers={"X-Total-Count": str(len(view.cfg.sites))}
        )
    members = None
    if q.group is not None:
        members = view.group_sites(q.group)
        if members is None:
            raise HTTPException(422, f"group: unknown group '{q.group}'; GET /api/v1/groups lists them")
    found = view.sites_page(SiteFilter(q=q.q, sites=members, status=q.status), q.page())
    return _json_page(found.rows, found.total)


def _json_page(rows: list[dict[str, Any]], total: int) -> Response:
    body = json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, media_type="application/json", headers={"X-Total-Count": str(total)})


@router.get("/sites/{site_id}")
async def site(site_id: Annotated[str, PathParam(max_length=64)], _: Viewer, view: View) -> dict[str, Any]:
    found = view.site(site_id)
    if found is None:
        raise HTTPException(404, f"unknown site '{site_id}'; GET /api/v1/sites lists them")
    return found


@router.get("/devices", response_model=list[dict[str, Any]])
async def devices(q: Annotated[DevicesQuery, Query()], _: Viewer, view: View) -> Response:
    """Every device (or the page of them the query asks for): status, values with their quality, the
    setpoint sent and what it reads back."""
    if q == DevicesQuery():
        return Response(
            view.devices_json(), media_type="application/json", headers={"X-Total-Count": str(len(view.device_ids()))}
        )
    flt = DeviceFilter(q=q.q, site=q.site, kind=q.kind, status=q.status, problems=q.problems)
    found = view.devices_page(flt, q.page())
    return _json_page(found.rows, found.total)


@router.get("/devices/{device_id}")
async def device(device_id: Annotated[str, PathParam(max_length=64)], _: Viewer, view: View) -> dict[str, Any]:
    found = view.device(device_id)
    if found is None:
        raise HTTPException(404, f"unknown device '{device_id}'; GET /api/v1/devices lists them")
    return found


@router.get("/devices/{device_id}/setpoints")
async def device_setpoints(
    device_id: Annotated[str, PathParam(max_length=64)],
    _: Viewer,
    view: View,
    start: Annotated[Instant | None, Query(description="default: one hour before end")] = None,
    end: Annotated[Instant | None, Query(description="default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """The setpoints written to one device between ``start`` and ``end`` (oldest first, at most
    ``limit``): action, requested, written (after clamping) and read-back W, and whether it was in force."""
    found = view.setpoints(
        device_id, start_s=start.timestamp() if start else None, end_s=end.timestamp() if end else None, limit=limit
    )
    if found is None:
        raise HTTPException(404, f"unknown device '{device_id}'; GET /api/v1/devices lists them")
    return found


@router.get("/plan")
async def plan(_: Viewer, view: View) -> dict[str, Any]:
    """The plan in force: per site per quarter-hour PV limit, battery, meter power and SoC."""
    return {"plan": view.plan()}


class TotalsQuery(BaseModel):
    """The scope of GET /api/v1/plan/totals: the fleet (default), one ``site`` or one ``group``."""

    model_config = ConfigDict(extra="forbid")
    site: Ident | None = None
    group: Ident | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        _one_scope_of(self, "site", "group")
        return self


@router.get("/plan/totals")
async def plan_totals(q: Annotated[TotalsQuery, Query()], _: Viewer, view: View) -> dict[str, Any]:
    """The plan in force and its forecast summed over the fleet, a site or a group per planned period:
    PV, battery, export at the meters (Σ of each site's gross export, like the measured one), PV
    available, load, export ceiling; and the export ceiling now. Small at any fleet size."""
    if q.site is not None:
        if view.site(q.site) is None:
            raise HTTPException(404, f"unknown site '{q.site}'; GET /api/v1/sites lists them")
        return view.plan_totals(frozenset({q.site}))
    if q.group is not None:
        members = view.group_sites(q.group)
        if members is None:
            raise HTTPException(404, f"unknown group '{q.group}'; GET /api/v1/groups lists them")
        return view.plan_totals(members)
    return view.plan_totals(None)


@router.get("/forecast")
async def forecast(_: Viewer, view: View) -> dict[str, Any]:
    """The forecasts the plan in force was made with: prices, and per site PV available and load; and
    per site the export ceiling in each planned period (``export_ceiling_w``, docs/definitions.md
    "Grid rules")."""
    found = view.forecast()
    return {"forecast": None} if found is None else found


@router.get("/forecast/quality")
async def forecast_quality(_: Viewer, view: View) -> dict[str, Any]:
    """How good the forecasts have been: per kind and lead band (hours ahead, [from, to)), the periods
    judged, the MAE normalised by each site's norm (PV: kWp; load: mean load) and the skill against
    persistence and climatology (1 − MAE ÷ the reference's MAE; above 0 beats it)."""
    return {"quality": view.forecast_quality()}


@router.get("/caps")
async def caps(_: Viewer, view: View) -> dict[str, Any]:
    """The limits in force now per site (W): feed-in cap, export cap and export ceiling now, connection,
    installer ceiling, stage, §14a, guard."""
    return view.caps()


@router.get("/history")
async def history(q: Annotated[HistoryQuery, Query()], _: Viewer, view: View) -> dict[str, Any]:
    """Fleet, site or device history averaged per ``resolution_s``."""
    return view.history(
        start_s=q.start.timestamp() if q.start else None,
        end_s=q.end.timestamp() if q.end else None,
        resolution_s=q.resolution_s,
        site=q.site,
        device=q.device,
    )


@router.get("/alarms")
async def alarms(
    _: Viewer,
    view: View,
    response: Response,
    active_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    severity: Literal["info", "warning", "critical"] | None = None,
    sort: Literal["-raised_at", "raised_at"] = "-raised_at",
) -> list[dict[str, Any]]:
    """Alarms newest first (``sort=raised_at``: oldest first), ``offset`` skipped, at most ``limit``;
    ``active_only``: not cleared; of one ``severity``. ``X-Total-Count``: how many stored alarms match."""
    _total(response, view.alarm_count(active_only=active_only, severity=severity))
    oldest = sort == "raised_at"
    return view.alarms(active_only=active_only, limit=limit, offset=offset, severity=severity, oldest_first=oldest)


@router.get("/audit")
async def audit(
    _: Viewer,
    view: View,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    who: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    sort: Literal["-ts", "ts"] = "-ts",
) -> list[dict[str, Any]]:
    """Every operator and admin action: who, when, what, result; newest first (``sort=ts``: oldest
    first), older than ``before_id``, of one ``who`` and ``action``, ``offset`` skipped, at most
    ``limit``. ``X-Total-Count``: how many entries match."""
    _total(response, view.audit_count(before_id=before_id, who=who, action=action))
    return view.audit(
        limit=limit, before_id=before_id, offset=offset, who=who, action=action, oldest_first=sort == "ts"
    )


@router.get("/commands")
async def active_commands(_: Viewer, view: View) -> list[dict[str, Any]]:
    """Commands in force or waiting to start."""
    return view.commands()
