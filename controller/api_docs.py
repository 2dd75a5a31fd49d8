"""The API's documentation page at ``/docs`` (Swagger UI) from local files, so it works offline.

Swagger UI's files (swagger-ui-bundle.js, swagger-ui.css; Apache-2.0) come with the
``fastapi-offline`` package and are served under ``/docs-assets/``; the page FastAPI builds
(:func:`fastapi.openapi.docs.get_swagger_ui_html`) points at them and at ``/openapi.json``, and
names no other origin. Its one inline script (Swagger UI's start-up) is allowed by its hash in
the page's Content-Security-Policy, so nothing else may run.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
ASSETS_DIR = Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _csp(html: str) -> str:
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    ]
    return (
        f"default-src 'none'; script-src 'self' {' '.join(hashes)}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def mount_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets from this machine (the app must be made with ``docs_url=None``)."""
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
    )
    html = bytes(page.body).decode()
    headers = {"Content-Security-Policy": _csp(html), "Cache-Control": "no-cache"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    app.mount(ASSETS, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
