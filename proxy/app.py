"""FastAPI app: ``POST /v1/clip/request`` and ``GET /v1/clip/{request_id}/status``.

    PREFECT_API_URL=http://127.0.0.1:4200/api uvicorn proxy.app:create_app --factory --port 8080

A request is validated with the shared ``ClipRequest`` model (NAS-root confinement
included) before anything is published, recorded as accepted, then published to
``clipping-requests``. Status comes from Prefect: the flow run whose idempotency key is the
request id, and the completion artifact it leaves.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from prefect.client.orchestration import PrefectClient, get_client
from pydantic import BaseModel

from clipping.messages import ClipState, ClipStatusReport, NewClipRequest
from clipping.pubsub import publish_model
from clipping.settings import Settings, get_settings
from proxy.accepted import AcceptedRequests, RequestIdConflict
from proxy.status import find_run, report_for_run

logger = logging.getLogger("clipping.proxy")


class ClipAccepted(BaseModel):
    request_id: str
    status: Literal[ClipState.QUEUED] = ClipState.QUEUED
    status_url: str


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.accepted = AcceptedRequests(settings.proxy_database_url)
        async with get_client() as prefect:
            app.state.prefect = prefect
            yield
        app.state.accepted.close()

    app = FastAPI(title="Clipping service", version="1.0.0", lifespan=lifespan)

    def accepted(request: Request) -> AcceptedRequests:
        return request.app.state.accepted

    def prefect(request: Request) -> PrefectClient:
        return request.app.state.prefect

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/clip/request", status_code=status.HTTP_202_ACCEPTED)
    async def request_clip(
        clip: NewClipRequest,
        request: Request,
        accepted: Annotated[AcceptedRequests, Depends(accepted)],
    ) -> ClipAccepted:
        try:
            is_new = accepted.accept(clip)
        except RequestIdConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "request_id was already used for a different request"
            ) from None
        if is_new:
            await _publish(settings, clip, accepted)
        return ClipAccepted(
            request_id=clip.request_id,
            status_url=str(request.url_for("clip_status", request_id=clip.request_id)),
        )

    @app.get("/v1/clip/{request_id}/status", name="clip_status")
    async def clip_status(
        request_id: str,
        accepted: Annotated[AcceptedRequests, Depends(accepted)],
        prefect: Annotated[PrefectClient, Depends(prefect)],
    ) -> ClipStatusReport:
        run = await find_run(prefect, request_id)
        if run is not None:
            return await report_for_run(prefect, request_id, run)
        if request_id in accepted:
            return ClipStatusReport(request_id=request_id, status=ClipState.QUEUED)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no clip request {request_id!r}")

    return app


async def _publish(settings: Settings, clip: NewClipRequest, accepted: AcceptedRequests) -> None:
    try:
        message_id = await asyncio.to_thread(
            publish_model,
            settings.topic_path(settings.requests_topic),
            clip,
            request_id=clip.request_id,
        )
    except Exception:
        logger.exception("request %s: publishing failed", clip.request_id)
        accepted.forget(clip.request_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the request could not be queued; retry later"
        ) from None
    logger.info("request %s queued as message %s", clip.request_id, message_id)
