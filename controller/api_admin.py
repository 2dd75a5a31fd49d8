"""Admin routes of the operator API under /api/v1/admin (admin only): reload of the fleet file.

POST /api/v1/admin/reload validates the file the controller was started with and applies what
takes effect while running (:mod:`sparcs.controller.reload`): 200 with what was applied and what
needs a restart; 422 with every error (each with its path, as `sparcs check-config` prints them)
when the file is refused, the running configuration unchanged; 409 when the controller was not
started from a file. Every reload is audited.
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from sparcs.controller.api_deps import Admin, Ops

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/reload")
async def reload(p: Admin, ops: Ops) -> Any:
    """Reload the fleet file: what changed and takes effect while running is applied; fields that
    need a restart are listed in ``restart_needed``; a bad file changes nothing (422, ``errors``)."""
    report = await ops.reload(p.name)
    if report is None:
        raise HTTPException(409, "this controller was not started from a fleet file; nothing to reload")
    if not report["ok"]:
        return JSONResponse(
            status_code=422,
            content={"error": f"the fleet file has {len(report['errors'])} error(s); nothing changed", **report},
        )
    return report
