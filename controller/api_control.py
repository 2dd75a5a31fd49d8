"""The run-time control switch of a device: PUT /api/v1/devices/{device_id}/control (operator or admin).

``{"controlled": false}`` takes the device out of control (monitor-only): it is released to its
installer configuration first, then neither planned nor written; ``{"controlled": true}`` hands it
back (it is controlled again only if the fleet file's ``control`` is true as well). The switch is
stored with its audit entry before the answer, survives a restart, and a re-plan is requested.
Rules: :mod:`sparcs.controller.device_control`; docs/operations.md "Control switch".
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from sparcs.controller.api_deps import Operator, Ops
from sparcs.controller.device_control import UnknownDevice
from sparcs.controller.read_model import iso

router = APIRouter(prefix="/api/v1/devices", tags=["commands"])
DeviceId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.-]{1,64}$", max_length=64)]


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    controlled: bool = Field(description="false: monitor-only (released first); true: controlled again")


@router.put("/{device_id}/control")
async def switch_control(device_id: DeviceId, body: ControlRequest, p: Operator, ops: Ops) -> dict[str, Any]:
    """Switch a device between controlled and monitor-only; answers the device's control now."""
    try:
        view = await ops.switch_control(device_id, body.controlled, p.name)
    except UnknownDevice:
        raise HTTPException(404, f"unknown device '{device_id}'; GET /api/v1/devices lists them") from None
    at = view["switched_at"]
    return {"device": device_id, "control": {**view, "switched_at": None if at is None else iso(at)}}
