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
from typing import Annotated, Any, Self

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sparcs.config.schema import AwareDatetime
from sparcs.controller.api_deps import View, Viewer

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
        if self.site is not None and self.device is not None:
            raise ValueError("give either site or device, not both")
        return self


@router.get("/session")
async def session(p: Viewer) -> dict[str, Any]:
    """Who this token belongs to and whether it may send commands (operator or admin)."""
    return {"name": p.name, "role": p.role, "may_command": p.may("operator")}


@router.get("/fleet", response_model=dict[str, Any])
async def fleet(_: Viewer, view: View) -> Response:
    """The fleet now: PV, battery, load, export at the meters, SoC, flexibility, devices online/stale/total."""
    return Response(view.fleet_json(), media_type="application/json")


@router.get("/sites", response_model=list[dict[str, Any]])
async def sites(_: Viewer, view: View) -> Response:
    """Every site now: ratings, feed-in cap, stage, §14a, guard limit, ``curtailed`` (docs/definitions.md
    "Grid rules"), measurements."""
    return Response(view.sites_json(), media_type="application/json")


@router.get("/sites/{site_id}")
async def site(site_id: Annotated[str, PathParam(max_length=64)], _: Viewer, view: View) -> dict[str, Any]:
    found = view.site(site_id)
    if found is None:
        raise HTTPException(404, f"unknown site '{site_id}'; GET /api/v1/sites lists them")
    return found


@router.get("/devices", response_model=list[dict[str, Any]])
async def devices(_: Viewer, view: View) -> Response:
    """Every device: status, values with their quality, the setpoint sent and what it reads back."""
    return Response(view.devices_json(), media_type="application/json")


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
    _: Viewer, view: View, active_only: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[dict[str, Any]]:
    return view.alarms(active_only=active_only, limit=limit)


@router.get("/audit")
async def audit(
    _: Viewer,
    view: View,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[dict[str, Any]]:
    """Every operator and admin action: who, when, what, result; newest first."""
    return view.audit(limit=limit, before_id=before_id)


@router.get("/commands")
async def active_commands(_: Viewer, view: View) -> list[dict[str, Any]]:
    """Commands in force or waiting to start."""
    return view.commands()
