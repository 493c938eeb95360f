"""The M6 API: clip requests and their status, and the NAS agents for operators.

    CLIPPING_PROXY_API_KEYS_FILE=/etc/clipping/api-keys \\
    PREFECT_API_URL=http://127.0.0.1:4200/api \\
    uvicorn proxy.app:create_app --factory --port 8080

Endpoints, one router per resource in ``proxy/routes`` (``openapi.yaml`` documents every
answer); what they depend on is in ``proxy/deps.py``:

- ``POST /v1/clip/request`` (scope ``clip``): validated with the shared ``ClipRequest``
  model (NAS-root confinement included) before anything is published, recorded as
  accepted with its caller as owner, published to ``clipping-requests``; 202 with the
  status URL.
- ``GET /v1/clip/{request_id}/status`` (scope ``clip``): from Prefect, the flow run whose
  idempotency key is the request id and the artifacts it leaves; ``queued`` from the
  accepted record until the run exists. A caller sees only its own requests (404 for the
  others), an admin every one.
- ``GET /v1/admin/agents``, ``POST /v1/admin/agents/{agent_id}/failover|resume`` (scope
  ``admin``): the workers of the pool; drain an agent (its runs move to the others) or
  take it back.
- ``GET /v1/webhooks/secret`` (scope ``clip``): the key's secret that signs the completion
  callbacks of its requests (``callback_url``); the lifespan runs their consumer and
  deliverer (``proxy.webhooks``) when ``CLIPPING_PROXY_WEBHOOK_SECRET`` is set.
- ``GET /metrics`` (scope ``admin``): Prometheus metrics (``proxy.metrics``).
- ``GET /health``: open.

Keys are bearer tokens (``proxy.auth``, ``proxy.access``), checked before any problem with
the body is reported; bodies are limited in size (413) and read time (408), the request
endpoint in rate per key (429). ``/docs``, ``/redoc`` and ``/openapi.json`` are served only
with ``CLIPPING_PROXY_DOCS_ENABLED``.

Every request is handled in a span of its own (``proxy.tracing``: it continues the
``traceparent`` header's trace and is answered in the response's), and ``create_app``
configures the process's logging (``clipping.logs``, ``CLIPPING_LOG_FORMAT``), uvicorn's
access lines included.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prefect.client.orchestration import get_client
from prefect.context import SettingsContext, get_settings_context
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipping.bucket import ClipBucket
from clipping.logs import PROXY, configure_logging
from clipping.messages import describe_problems
from clipping.outcomes import RequestOutcomes
from clipping.settings import Settings, get_settings
from clipping.signing import UrlSigner
from clipping.spans import configure_span_export
from proxy.accepted import AcceptedRequests
from proxy.access import refusal_of
from proxy.auth import ApiKeys
from proxy.limits import BodyLimits, RateLimiter
from proxy.links import ClipLinks
from proxy.metrics import CompletionCounter, CompletionMetrics, HttpMetrics, ProxyMetrics
from proxy.reconcile import Reconciler, reconcile_forever
from proxy.routes import agents, clips, health, metrics, webhooks
from proxy.services import Publisher, Services
from proxy.settings import ProxySettings, get_proxy_settings
from proxy.status import find_run
from proxy.tracing import TraceRequests
from proxy.webhooks import Webhooks

logger = logging.getLogger("clipping.proxy")

API_VERSION = "1.0.0"


def create_app(
    settings: Settings | None = None, proxy_settings: ProxySettings | None = None
) -> FastAPI:
    settings = settings or get_settings()
    proxy_settings = proxy_settings or get_proxy_settings()
    configure_logging(PROXY, settings)
    configure_span_export(PROXY)
    services = Services(
        settings=settings,
        proxy_settings=proxy_settings,
        keys=ApiKeys.from_settings(proxy_settings),
        limiter=RateLimiter(proxy_settings.requests_per_minute, proxy_settings.request_burst),
        publisher=Publisher(settings, proxy_settings.publish_timeout_seconds),
        links=ClipLinks(
            lambda: UrlSigner.from_settings(settings),
            settings.signed_url_ttl,
            settings.url_min_valid,
            timedelta(days=settings.retention_days) if settings.retention_days else None,
        ),
        metrics=ProxyMetrics(),
        prefect_settings=get_current_settings().copy_with_update(
            updates={PREFECT_CLIENT_MAX_RETRIES: proxy_settings.prefect_retries}
        ),
    )
    if not services.keys.scopes_by_digest:
        logger.warning("no API keys configured: every endpoint but /health answers 401")
    docs = proxy_settings.docs_enabled
    app = FastAPI(
        title="Clipping service",
        version=API_VERSION,
        description="Clips of poker hands from NAS recordings, for M6 and operators.",
        lifespan=_lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.services = services
    app.add_middleware(
        BodyLimits,
        max_bytes=proxy_settings.max_body_bytes,
        read_timeout_seconds=proxy_settings.body_read_timeout_seconds,
    )
    # Outermost, so answers the body limits give (413, 408) are counted too.
    app.add_middleware(HttpMetrics, metrics=services.metrics)
    # Around everything: every answer carries its trace, every line logged for it its ids.
    app.add_middleware(TraceRequests)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    for unreachable in (httpx.HTTPError, PrefectHTTPStatusError):
        app.add_exception_handler(unreachable, _backend_unreachable)
    for resource in (health, clips, agents, webhooks, metrics):
        app.include_router(resource.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the request store, the outcome records and the Prefect client; reconcile."""
    services: Services = app.state.services
    services.profile = get_settings_context().profile
    services.accepted = AcceptedRequests(services.proxy_settings.database_url)
    services.outcomes = RequestOutcomes.from_settings(services.settings)
    services.bucket = ClipBucket.from_settings(services.settings).storage()
    async with get_client() as prefect:
        services.prefect = prefect
        reconciling = asyncio.create_task(
            reconcile_forever(
                _reconciler(services, services.accepted, services.outcomes),
                timedelta(seconds=services.proxy_settings.reconcile_seconds),
            )
        )
        callbacks = Webhooks.start(services.settings, services.proxy_settings, services.accepted)
        counting = _count_completions(services, services.accepted)
        yield
        reconciling.cancel()
        if callbacks is not None:
            await callbacks.stop()
        if counting is not None:
            await asyncio.to_thread(counting.stop)
    services.accepted.close()


async def _invalid_request(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    return await refusal_of(request) or _unprocessable(describe_problems(error.errors()))


async def _http_problem(request: Request, error: Exception) -> Response:
    """FastAPI's answers, but for a body it could not parse: the endpoints never raise 400
    themselves, FastAPI does when reading the body as JSON fails other than by syntax."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code != status.HTTP_400_BAD_REQUEST:
        return await http_exception_handler(request, error)
    return await refusal_of(request) or _unprocessable(_unparseable(error.__cause__))


def _unparseable(cause: BaseException | None) -> str:
    """What was wrong with a body ``json.loads`` refused without a syntax error."""
    if isinstance(cause, UnicodeDecodeError):
        return "body: not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "body: nested too deeply"
    if isinstance(cause, ValueError):  # e.g. a number of over 4300 digits
        return f"body: not valid JSON ({str(cause).split(':')[0]})"
    return "body: not valid JSON"


def _unprocessable(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _backend_unreachable(request: Request, error: Exception) -> JSONResponse:
    # The path is the caller's: logged escaped (%r) so CR/LF cannot forge a log line.
    logger.error("%s %r: Prefect unreachable: %s", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": "the orchestrator is unreachable; retry later"},
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def _count_completions(services: Services, accepted: AcceptedRequests) -> CompletionMetrics | None:
    if not services.proxy_settings.count_completions:
        return None
    settings = services.settings
    return CompletionMetrics(
        settings.subscription_path(settings.metrics_subscription),
        CompletionCounter(services.metrics, accepted.record),
    )


def _reconciler(
    services: Services, accepted: AcceptedRequests, outcomes: RequestOutcomes
) -> Reconciler:
    async def has_run(request_id: str) -> bool:
        assert services.prefect is not None
        with SettingsContext(profile=services.profile, settings=services.prefect_settings):
            return await find_run(services.prefect, request_id) is not None

    return Reconciler(
        accepted,
        outcomes,
        has_run,
        services.publisher.republish,
        unstarted_after=timedelta(seconds=services.proxy_settings.unstarted_seconds),
        max_publications=services.proxy_settings.max_publications,
    )
