"""The M6 API: clip requests and their status, and the NAS agents for operators.

    CLIPPING_PROXY_API_KEYS_FILE=/etc/clipping/api-keys \\
    PREFECT_API_URL=http://127.0.0.1:4200/api \\
    uvicorn proxy.app:create_app --factory --port 8080

Endpoints (``openapi.yaml`` documents every answer):

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
- ``GET /health``: open.

Keys are bearer tokens (``proxy.auth``, ``proxy.access``), checked before any problem with
the body is reported; bodies are limited in size (413) and read time (408), the request
endpoint in rate per key (429). ``/docs``, ``/redoc`` and ``/openapi.json`` are served only
with ``CLIPPING_PROXY_DOCS_ENABLED``.
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prefect.client.orchestration import PrefectClient, get_client
from prefect.context import SettingsContext
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipping import drain
from clipping.messages import ClipState, ClipStatusReport, NewClipRequest, describe_problems
from clipping.outcomes import RequestOutcomes
from clipping.pubsub import publish_data, publish_model
from clipping.settings import Settings, get_settings
from proxy.accepted import AcceptedRequests, RequestIdConflict
from proxy.access import Caller, RequireScope, refusal_of
from proxy.agents import AgentReport, AgentStatus, UnknownAgent, agent_report, agent_reports
from proxy.auth import ApiKeys, Scope
from proxy.limits import BodyLimits, RateLimiter
from proxy.reconcile import Reconciler, reconcile_forever
from proxy.settings import ProxySettings, get_proxy_settings
from proxy.status import find_run, report_for_run, report_of_outcome

logger = logging.getLogger("clipping.proxy")

API_VERSION = "1.0.0"


class ClipAccepted(BaseModel):
    request_id: str
    status: Literal[ClipState.QUEUED] = ClipState.QUEUED
    status_url: str


class Problem(BaseModel):
    """Every error answer: one line saying what was wrong."""

    detail: str


_PROBLEMS = {
    401: "No API key, or not a known one (checked before the body's problems are reported).",
    403: "The key lacks the scope this endpoint needs.",
    404: "No such request or agent, or a request another caller made.",
    408: "The request body did not arrive in time; the connection is closed.",
    409: "Conflicts with an earlier request (its id is taken), or with the pool's state.",
    413: "The request body is too large.",
    422: "The request is invalid: a field, or the body itself (not JSON, not UTF-8, nested "
    "too deeply, a number too long); the detail names each problem.",
    429: "Too many requests with this key; retry after the Retry-After header's seconds.",
    503: "A service behind the proxy (Prefect, Pub/Sub) is unreachable; retry later.",
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": _PROBLEMS[code]} for code in codes}


def create_app(
    settings: Settings | None = None, proxy_settings: ProxySettings | None = None
) -> FastAPI:
    settings = settings or get_settings()
    proxy_settings = proxy_settings or get_proxy_settings()
    keys = ApiKeys.from_settings(proxy_settings)
    limiter = RateLimiter(proxy_settings.requests_per_minute, proxy_settings.request_burst)
    if not keys.scopes_by_digest:
        logger.warning("no API keys configured: every endpoint but /health answers 401")

    # Built once: making Prefect settings per request costs ~50 ms of CPU.
    prefect_settings = get_current_settings().copy_with_update(
        updates={PREFECT_CLIENT_MAX_RETRIES: proxy_settings.prefect_retries}
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.profile = SettingsContext.get().profile
        app.state.accepted = AcceptedRequests(proxy_settings.database_url)
        app.state.outcomes = RequestOutcomes.from_settings(settings)
        async with get_client() as prefect:
            app.state.prefect = prefect
            reconciling = asyncio.create_task(
                reconcile_forever(
                    _reconciler(app, settings, proxy_settings, prefect_settings),
                    timedelta(seconds=proxy_settings.reconcile_seconds),
                )
            )
            yield
            reconciling.cancel()
        app.state.accepted.close()

    docs = proxy_settings.docs_enabled
    app = FastAPI(
        title="Clipping service",
        version=API_VERSION,
        description="Clips of poker hands from NAS recordings, for M6 and operators.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_middleware(
        BodyLimits,
        max_bytes=proxy_settings.max_body_bytes,
        read_timeout_seconds=proxy_settings.body_read_timeout_seconds,
    )
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    for unreachable in (httpx.HTTPError, PrefectHTTPStatusError):
        app.add_exception_handler(unreachable, _backend_unreachable)

    clip_caller = RequireScope(keys, Scope.CLIP)
    admin_caller = RequireScope(keys, Scope.ADMIN)

    def accepted(request: Request) -> AcceptedRequests:
        return request.app.state.accepted

    async def prefect(request: Request) -> AsyncIterator[PrefectClient]:
        # An async dependency runs in the endpoint's context, so the settings hold there.
        with SettingsContext(profile=request.app.state.profile, settings=prefect_settings):
            yield request.app.state.prefect

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/clip/request",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["clips"],
        responses=_problems(401, 403, 408, 409, 413, 422, 429, 503),
    )
    async def request_clip(
        clip: NewClipRequest,
        request: Request,
        caller: Annotated[Caller, Depends(clip_caller)],
        accepted: Annotated[AcceptedRequests, Depends(accepted)],
    ) -> ClipAccepted:
        """Queue a clip. Repeating a body with the same ``request_id`` answers the same.

        An id another caller used is refused (409).
        """
        if wait := limiter.retry_after(caller.digest):
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "too many clip requests with this key",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        try:
            is_new = accepted.accept(clip, owner=caller.digest)
        except RequestIdConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "request_id was already used for a different request"
            ) from None
        if is_new:
            await _publish(settings, clip, accepted, proxy_settings.publish_timeout_seconds)
        return ClipAccepted(
            request_id=clip.request_id,
            status_url=str(request.url_for("clip_status", request_id=clip.request_id)),
        )

    @app.get(
        "/v1/clip/{request_id}/status",
        name="clip_status",
        tags=["clips"],
        responses=_problems(401, 403, 404, 408, 413, 503),
    )
    async def clip_status(
        request_id: str,
        request: Request,
        caller: Annotated[Caller, Depends(clip_caller)],
        accepted: Annotated[AcceptedRequests, Depends(accepted)],
        prefect: Annotated[PrefectClient, Depends(prefect)],
    ) -> ClipStatusReport:
        """``queued``, ``processing`` (with progress), ``completed`` or ``failed``.

        Only the caller's own requests; an admin sees every one.
        """
        # Another caller's request is answered like an unknown one: no status, no URL.
        if not caller.is_admin and accepted.owner(request_id) != caller.digest:
            raise _unknown_request(request_id)
        outcomes: RequestOutcomes = request.app.state.outcomes
        if (outcome := await asyncio.to_thread(outcomes.read, request_id)) is not None:
            return report_of_outcome(request_id, outcome)
        run = await find_run(prefect, request_id)
        if run is not None:
            return await report_for_run(prefect, request_id, run)
        if request_id in accepted:
            return ClipStatusReport(request_id=request_id, status=ClipState.QUEUED)
        raise _unknown_request(request_id)

    @app.get("/v1/admin/agents", tags=["agents"], responses=_problems(401, 403, 408, 413, 503))
    async def list_agents(
        _: Annotated[Caller, Depends(admin_caller)],
        prefect: Annotated[PrefectClient, Depends(prefect)],
    ) -> list[AgentReport]:
        """Every worker of the pool: status, last heartbeat, the runs it is executing."""
        return await agent_reports(prefect, settings.work_pool)

    @app.post(
        "/v1/admin/agents/{agent_id}/failover",
        tags=["agents"],
        responses=_problems(401, 403, 404, 408, 409, 413, 503),
    )
    async def failover_agent(
        agent_id: str,
        _: Annotated[Caller, Depends(admin_caller)],
        prefect: Annotated[PrefectClient, Depends(prefect)],
    ) -> AgentReport:
        """Drain the agent: it takes no new runs and hands its runs to the other agents.

        Refused (409) when no other agent is online to take them. Idempotent.
        """
        reports = await agent_reports(prefect, settings.work_pool)
        if agent_id not in {report.agent_id for report in reports}:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r} in the pool")
        if not any(r.status is AgentStatus.ONLINE and r.agent_id != agent_id for r in reports):
            raise HTTPException(
                status.HTTP_409_CONFLICT, "no other agent is online to take over its runs"
            )
        await drain.drain(prefect, agent_id)
        logger.warning("agent %s drained through the admin API", agent_id)
        return await agent_report(prefect, settings.work_pool, agent_id)

    @app.post(
        "/v1/admin/agents/{agent_id}/resume",
        tags=["agents"],
        responses=_problems(401, 403, 404, 408, 413, 503),
    )
    async def resume_agent(
        agent_id: str,
        _: Annotated[Caller, Depends(admin_caller)],
        prefect: Annotated[PrefectClient, Depends(prefect)],
    ) -> AgentReport:
        """Let a drained agent take runs again. Idempotent."""
        try:
            await agent_report(prefect, settings.work_pool, agent_id)
        except UnknownAgent:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r} in the pool"
            ) from None
        await drain.resume(prefect, agent_id)
        logger.warning("agent %s resumed through the admin API", agent_id)
        return await agent_report(prefect, settings.work_pool, agent_id)

    return app


def _unknown_request(request_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no clip request {request_id!r}")


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


def _reconciler(
    app: FastAPI, settings: Settings, proxy_settings: ProxySettings, prefect_settings: Any
) -> Reconciler:
    async def has_run(request_id: str) -> bool:
        with SettingsContext(profile=app.state.profile, settings=prefect_settings):
            return await find_run(app.state.prefect, request_id) is not None

    async def publish(request_id: str, body: bytes) -> None:
        await asyncio.to_thread(
            publish_data,
            settings.topic_path(settings.requests_topic),
            body,
            timeout=proxy_settings.publish_timeout_seconds,
            request_id=request_id,
        )

    return Reconciler(
        app.state.accepted,
        app.state.outcomes,
        has_run,
        publish,
        unstarted_after=timedelta(seconds=proxy_settings.unstarted_seconds),
        max_publications=proxy_settings.max_publications,
    )


async def _publish(
    settings: Settings, clip: NewClipRequest, accepted: AcceptedRequests, timeout: float
) -> None:
    try:
        message_id = await asyncio.to_thread(
            publish_model,
            settings.topic_path(settings.requests_topic),
            clip,
            timeout=timeout,
            request_id=clip.request_id,
        )
    except Exception:
        logger.exception("request %s: publishing failed", clip.request_id)
        accepted.forget(clip.request_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the request could not be queued; retry later"
        ) from None
    logger.info("request %s queued as message %s", clip.request_id, message_id)
