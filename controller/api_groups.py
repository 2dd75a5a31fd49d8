"""The group routes of the operator API (any role from viewer up): the fleet's groups of sites with
their totals now, stages, §14a and the pool limit in force (docs/interfaces.md "Groups").

Commands address a group through the command routes (``group`` in a stage, §14a or pool-limit body);
these routes only read, through the read model.
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Any

from fastapi import APIRouter, HTTPException

from sparcs.controller.api_deps import View, Viewer

router = APIRouter(prefix="/api/v1/groups", tags=["groups"])


@router.get("")
async def groups(_: Viewer, view: View) -> list[dict[str, Any]]:
    """Every group: sites, rating (W), totals now (W, Wh; signs of docs/definitions.md "Signs"),
    stages, §14a, pool limit."""
    return view.groups()


@router.get("/{group_id}")
async def group(group_id: str, _: Viewer, view: View) -> dict[str, Any]:
    found = view.group(group_id)
    if found is None:
        raise HTTPException(404, f"unknown group '{group_id}'; GET /api/v1/groups lists them")
    return found
