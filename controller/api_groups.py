"""The group routes of the operator API (any role from viewer up): the fleet's groups of sites with
their totals now, stages, §14a and the pool limit in force (docs/interfaces.md "Groups").

Commands address a group through the command routes (``group`` in a stage, §14a or pool-limit body);
these routes only read, through the read model.
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from sparcs.controller.api_deps import View, Viewer
from sparcs.controller.api_read import Instant

GroupId = Annotated[str, PathParam(max_length=64)]

router = APIRouter(prefix="/api/v1/groups", tags=["groups"])


@router.get("")
async def groups(_: Viewer, view: View) -> list[dict[str, Any]]:
    """Every group: sites, rating (W), totals now (W, Wh; signs of docs/definitions.md "Signs"),
    stages, §14a, pool limit."""
    return view.groups()


class GroupHistoryQuery(BaseModel):
    """A group's history, averaged per site into buckets of ``resolution_s`` and summed over its sites."""

    model_config = ConfigDict(extra="forbid")
    start: Instant | None = Field(default=None, description="default: one hour before end")
    end: Instant | None = Field(default=None, description="default: now")
    resolution_s: int = Field(default=60, ge=1, le=86_400)


@router.get("/{group_id}/history")
async def group_history(
    group_id: GroupId, q: Annotated[GroupHistoryQuery, Query()], _: Viewer, view: View
) -> dict[str, Any]:
    """Per bucket the sum over the group's sites of pv_w, battery_w, grid_w, load_w, export_w and the
    flexibility (W, signs of docs/definitions.md "Signs"), and how many sites reported."""
    found = view.group_history(
        group_id,
        start_s=q.start.timestamp() if q.start else None,
        end_s=q.end.timestamp() if q.end else None,
        resolution_s=q.resolution_s,
    )
    if found is None:
        raise HTTPException(404, f"unknown group '{group_id}'; GET /api/v1/groups lists them")
    return found


@router.get("/{group_id}")
async def group(group_id: GroupId, _: Viewer, view: View) -> dict[str, Any]:
    found = view.group(group_id)
    if found is None:
        raise HTTPException(404, f"unknown group '{group_id}'; GET /api/v1/groups lists them")
    return found
