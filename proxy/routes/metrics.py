"""``GET /metrics`` (scope ``admin``): the proxy's Prometheus metrics (``proxy.metrics``)."""

from fastapi import APIRouter, Response

from proxy.deps import AdminCaller, MetricsDep
from proxy.problems import problems

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
async def metrics(_: AdminCaller, metrics: MetricsDep) -> Response:
    """Prometheus's text format: HTTP answers, requests accepted and refused, completions,
    failures by reason class, latency, step durations and clip sizes."""
    return Response(metrics.exposition(), media_type=EXPOSITION)
