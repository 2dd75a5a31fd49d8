"""The command routes of the operator API under /api/v1/commands (operator or admin): stages, §14a
dimming (for all sites, the named ones or a ``group``), a pool limit on the export of the fleet or a
group, the fleet export schedule, pause and resume, dispatch now, cancel.

Every command goes through :class:`~sparcs.controller.operations.Operations`, the one command path
(reached through the app's :class:`~sparcs.controller.command_port.CommandPort`):
it is stored with its audit entry before it is acknowledged (docs/definitions.md "Operator
commands"). A command that cannot be applied is a 422 naming the request field.
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from sparcs.controller.api_deps import Operator, Ops
from sparcs.controller.commands import (
    Command,
    Para14aRequest,
    PauseRequest,
    PoolLimitRequest,
    ScheduleRequest,
    StageRequest,
)
from sparcs.controller.read_model import command_view

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])


def accepted(c: Command) -> JSONResponse:
    return JSONResponse(status_code=201, content={"command": command_view(c)})


@router.post("/stage", status_code=201)
async def stage(body: StageRequest, p: Operator, ops: Ops) -> JSONResponse:
    """Curtailment stage K1–K4 for all sites, the named ones or a group's until ``expires_at``; the most
    restrictive wins per site."""
    return accepted(await ops.submit(body, p.name))


@router.post("/para14a", status_code=201)
async def para14a(body: Para14aRequest, p: Operator, ops: Ops) -> JSONResponse:
    """§14a EnWG dimming of grid charging for all sites, the named ones or a group's until ``expires_at``."""
    return accepted(await ops.submit(body, p.name))


@router.post("/pool-limit", status_code=201)
async def pool_limit(body: PoolLimitRequest, p: Operator, ops: Ops) -> JSONResponse:
    """Export of the fleet or a group at most ``limit_pct`` % of its rating until ``expires_at``, as the
    SunSpec pool interface's WMaxLimPct does; replaces the pool's earlier limit."""
    return accepted(await ops.submit(body, p.name))


@router.post("/schedule", status_code=201)
async def schedule(body: ScheduleRequest, p: Operator, ops: Ops) -> JSONResponse:
    """Fleet export schedule: quarter-hourly export_w (≥ 0) at the meters; replaces older values it covers."""
    return accepted(await ops.submit(body, p.name))


@router.post("/pause", status_code=201)
async def pause(body: PauseRequest, p: Operator, ops: Ops) -> JSONResponse:
    """Stop the optimizer; stages, caps and the export guard stay enforced."""
    return accepted(await ops.submit(body, p.name))


@router.post("/resume")
async def resume(p: Operator, ops: Ops) -> dict[str, Any]:
    """Resume automatic control (cancels every pause)."""
    done = await ops.resume(p.name)
    return {"resumed": bool(done), "cancelled": done}


@router.post("/dispatch-now", status_code=202)
async def dispatch_now(p: Operator, ops: Ops) -> JSONResponse:
    """Plan again at once (ignored while paused: the optimizer is stopped)."""
    requested = await ops.dispatch_now(p.name)
    return JSONResponse(status_code=202, content={"requested": requested, "paused": not requested})


@router.delete("/{command_id}")
async def cancel(command_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)], p: Operator, ops: Ops) -> dict[str, Any]:
    """Cancel an active command; the next active one applies."""
    done = await ops.cancel(command_id, p.name)
    if done is None:
        raise HTTPException(404, f"no active command {command_id}; GET /api/v1/commands lists them")
    return {"cancelled": done}
