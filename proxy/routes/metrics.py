"""``GET /metrics`` (scope ``admin``): the proxy's Prometheus metrics (``proxy.metrics``)."""

from fastapi import APIRouter, Request, Response

from proxy.deps import AdminCaller
from proxy.problems import problems
from proxy.services import services_of

router = APIRouter(tags=["metrics"])
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {EXPOSITION: {"schema": {"type": "string"}}}},
        **problems(401, 403, 408, 413),
    },
)
async def metrics(_: AdminCaller, request: Request) -> Response:
    """Prometheus's text format: HTTP answers, requests accepted and refused, completions,
    failures by reason class, latency, step durations and clip sizes."""
    return Response(services_of(request).metrics.exposition(), media_type=EXPOSITION)
