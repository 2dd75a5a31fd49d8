"""The operator dashboard: one static page at ``/`` that reads and commands through the API.

The page (``static/``: plain HTML, JS and CSS, no build step, no CDN) asks for a token once, keeps
it in ``sessionStorage`` and sends it as ``Authorization: Bearer`` on every fetch; tokens never
appear in a URL. It polls the API every few seconds. ``GET /api/v1/session`` (controller/api_read.py)
tells the page who the token belongs to, so a viewer sees the command panel disabled with the reason instead of a 403.

The page applies no grid rule (docs/definitions.md "Grid rules"): the export ceiling now and per
planned quarter-hour (``/api/v1/caps`` ``export_ceiling_now_w``, ``/api/v1/forecast``
``export_ceiling_w``) and whether a site is curtailed (``/api/v1/sites`` ``curtailed``) come from the
API, which takes them from ``sparcs.config.grid_rules``.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

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


def mount_dashboard(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/dashboard/``."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard")
