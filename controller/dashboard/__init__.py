"""The operator dashboard: one static page at ``/`` that reads and commands through the API.

The page (``static/``: plain HTML, JS and CSS, no build step, no CDN) asks for a token once, keeps
it in ``sessionStorage`` and sends it as ``Authorization: Bearer`` on every fetch; tokens never
appear in a URL. It polls the API every few seconds. ``GET /api/v1/session`` tells the page who the
token belongs to, so a viewer sees the command panel disabled with the reason instead of a 403.
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependency below from live annotations.
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from controller.auth import authenticate
from controller.cycle import Controller

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PATH = "/dashboard"

# The page loads only its own files and talks only to its own origin; nothing may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def mount_dashboard(app: FastAPI, ctl: Controller) -> None:
    """Serve the page at ``/``, its assets under ``/dashboard/``, and ``GET /api/v1/session``."""
    bearer = HTTPBearer(auto_error=False)

    @app.get("/api/v1/session", tags=["read"])
    async def session(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict[str, Any]:
        """Who this token belongs to and whether it may send commands (operator or admin)."""
        if creds is None:
            raise HTTPException(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        p = authenticate(ctl.store, creds.credentials)
        if p is None:
            raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return {"name": p.name, "role": p.role, "may_command": p.may("operator")}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard")
