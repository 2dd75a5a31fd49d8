"""Probes and metrics of the operator API: ``/healthz`` (liveness of the API and the control loop),
``/readyz`` (readiness) and ``/metrics`` (the control process's metrics for Prometheus: open to
loopback clients, else a viewer token is needed)."""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sparcs.controller.api_deps import View, authenticated, authorized, bearer
from sparcs.controller.metrics import CONTENT_TYPE

LOOPBACK = {"127.0.0.1", "::1", "localhost"}

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=None)
async def healthz(view: View) -> dict[str, str] | JSONResponse:
    """Liveness: the API serves requests and the control loop is heard from (503 naming the problem if not)."""
    problems = view.loop_problems()
    if problems:
        return JSONResponse(status_code=503, content={"status": "failing", "problems": problems})
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(view: View) -> JSONResponse:
    """Readiness: the control loop is heard from, the store answers and takes the history's writes, and
    the fleet was polled within three poll intervals."""
    problems = view.readiness_problems()
    status = 200 if not problems else 503
    return JSONResponse(status_code=status, content={"ready": not problems, "problems": problems})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, view: View) -> Response:
    """Prometheus metrics: open to loopback clients, else a viewer token is needed."""
    client = request.client.host if request.client else ""
    if client not in LOOPBACK:
        authorized(authenticated(request, await bearer(request)), "viewer")
    return Response(view.metrics_text(), media_type=CONTENT_TYPE)
