"""A request's outcome: the one place where it is decided, announced and recorded.

Every terminal state of a clip request goes through ``RequestOutcomes.settle``, whoever
reaches it: the flow (completed, or failed for good), the listener (rejected, or failed when
it parks a request) and the crash sweep (failed after too many crashes). ``settle``

1. claims the request's outcome: ``_records/{request_id}/announcing``, an object created
   only if absent, so of two writers one settles and the other takes its outcome;
2. publishes the completion on ``clipping-complete``;
3. records it as ``_records/{request_id}/announced.json``, the outcome everyone reads (the
   status API, a rerun of the flow, the listener on a redelivery).

So a request gets one terminal message: a second ``settle`` finds the record and publishes
nothing. Publish, then record: a writer that dies in between leaves its claim, which is
taken over after ``CLAIM_TIMEOUT``, and the message is repeated rather than lost (consumers
dedupe on ``request_id``). A writer whose publish fails releases its claim, so the next
attempt need not wait. A rejection of a message that had no request id is published but
cannot be recorded.
"""

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud.storage import Blob, Bucket

from clipping.bucket import ClipBucket
from clipping.messages import ClipCompletion, ClipState
from clipping.pubsub import publish_model
from clipping.records import records_prefix
from clipping.settings import Settings

logger = logging.getLogger("clipping.outcomes")

# Settling (publish + record) takes under a second; publish retries can stretch it.
CLAIM_TIMEOUT = timedelta(seconds=60)
CLAIM_POLL_S = 1.0

Publish = Callable[[ClipCompletion], str]


class RequestOutcomes:
    """The outcomes of clip requests, kept in the clip bucket."""

    def __init__(
        self,
        bucket: Bucket,
        publish: Publish,
        *,
        claim_timeout: timedelta = CLAIM_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._bucket = bucket
        self._publish = publish
        self._claim_timeout = claim_timeout
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, publish: Publish | None = None) -> "RequestOutcomes":
        """In the clip bucket, announcing on the completions topic (or through ``publish``)."""
        return cls(
            ClipBucket.from_settings(settings).storage(),
            publish or (lambda completion: publish_completion(settings, completion)),
        )

    def read(self, request_id: str) -> ClipCompletion | None:
        """The request's outcome, once it is settled."""
        try:
            data = self._record(request_id).download_as_bytes()
        except NotFound:
            return None
        return ClipCompletion.model_validate_json(data)

    def settle(self, completion: ClipCompletion) -> ClipCompletion:
        """Make ``completion`` the request's outcome unless it has one; the outcome that stands.

        Publishes only when this call settles the request. Raises when publishing or
        recording fails; the request is then still open, and settling may be tried again.
        """
        request_id = completion.request_id
        if request_id is None:
            self._publish(completion)
            return completion
        if (outcome := self.read(request_id)) is not None:
            return outcome
        claim = self._claim(request_id)
        if claim is None:
            outcome = self.read(request_id)
            assert outcome is not None, "a claim is given up only once its outcome is recorded"
            return outcome
        try:
            message_id = self._publish(completion)
        except Exception:
            self._release(claim)
            raise
        self._record(request_id).upload_from_string(
            completion.model_dump_json(), content_type="application/json"
        )
        logger.info(
            "request %s settled as %s (message %s)", request_id, completion.status, message_id
        )
        return completion

    def fail(self, request_id: str, hand_id: str | None, reason: str) -> ClipCompletion:
        """Settle a request that never became a clip as ``failed`` with ``reason``."""
        return self.settle(
            ClipCompletion(
                request_id=request_id, hand_id=hand_id, status=ClipState.FAILED, reason=reason
            )
        )

    def _claim(self, request_id: str) -> Blob | None:
        """The claim, once this writer holds it; None when another writer recorded the outcome.

        A claim older than the timeout was left by a writer that died before recording,
        and is taken over.
        """
        claim = self._bucket.blob(f"{records_prefix(request_id)}/announcing")
        generation = 0
        while True:
            try:
                claim.upload_from_string(b"", if_generation_match=generation)
                return claim
            except PreconditionFailed:
                pass
            if self.read(request_id) is not None:
                return None
            try:
                claim.reload()
            except NotFound:  # released meanwhile: try again at once
                generation = 0
                continue
            if datetime.now(UTC) - claim.updated >= self._claim_timeout:
                generation = claim.generation
            else:
                self._sleep(CLAIM_POLL_S)

    def _release(self, claim: Blob) -> None:
        try:
            claim.delete(if_generation_match=claim.generation)
        except Exception:  # it times out instead; the failure being raised matters more
            logger.warning("could not release the claim %s", claim.name, exc_info=True)

    def _record(self, request_id: str) -> Blob:
        return self._bucket.blob(f"{records_prefix(request_id)}/announced.json")


def run_outcome(
    parameters: Mapping[str, Any],
    flow_run_id: str,
    reason: str,
    agent_id: str | None = None,
    status: Literal[ClipState.FAILED, ClipState.CANCELLED] = ClipState.FAILED,
) -> ClipCompletion:
    """The outcome of a ``clip-hand`` run that ended without a clip (``failed`` unless it
    was cancelled), from the run's parameters."""
    request = parameters.get("request") or {}
    return ClipCompletion(
        request_id=request.get("request_id"),
        hand_id=request.get("hand_id"),
        status=status,
        reason=reason,
        agent_id=agent_id,
        flow_run_id=flow_run_id,
    )


def publish_completion(settings: Settings, completion: ClipCompletion) -> str:
    """Publish ``completion`` on the completions topic; the message id."""
    return publish_model(
        settings.topic_path(settings.completions_topic),
        completion,
        request_id=completion.request_id or "",
        status=completion.status.value,
    )
