"""Probes and metrics of the operator API: ``/healthz`` (liveness), ``/readyz`` (readiness) and
``/metrics`` (Prometheus: open to loopback clients, else a viewer token is needed)."""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sparcs.controller.api_deps import View, authenticated, authorized, bearer
from sparcs.controller.metrics import CONTENT_TYPE

LOOPBACK = {"127.0.0.1", "::1", "localhost"}

router = APIRouter(tags=["probes"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(view: View) -> JSONResponse:
    """Readiness: the store answers and the fleet was polled within three poll intervals."""
    problems = view.readiness_problems()
    status = 200 if not problems else 503
    return JSONResponse(status_code=status, content={"ready": not problems, "problems": problems})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, view: View) -> Response:
    """Prometheus metrics: open to loopback clients, else a viewer token is needed."""
    client = request.client.host if request.client else ""
    if client not in LOOPBACK:
        authorized(authenticated(request, await bearer(request)), "viewer")
    return Response(view.metrics.render(), media_type=CONTENT_TYPE)
