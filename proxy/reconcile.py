"""Accepted requests that never became a run: published again, then failed with a reason.

A request the proxy accepted (202) is published to ``clipping-requests``; the listener turns
it into a flow run or settles it (rejected, parked). Should the message be lost on the way,
the request would read ``queued`` for good. Every ``CLIPPING_PROXY_RECONCILE_SECONDS`` the
proxy looks at the open requests it published longer than ``CLIPPING_PROXY_UNSTARTED_SECONDS``
ago: one with an outcome or a run is closed; one with neither is published again (the
listener's idempotency makes a copy harmless), up to ``CLIPPING_PROXY_MAX_PUBLICATIONS``
times, and then settled as ``failed`` with the reason. Several proxy instances may do this
at once: publishing is idempotent and settling takes the outcome's claim. A request
published again continues the trace it was accepted in (a new span of it, or a new trace
for a record made before traces were kept), and its lines are logged under it.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from clipping.logs import log_context
from clipping.outcomes import RequestOutcomes
from clipping.tracing import TraceContext, in_span
from proxy.accepted import AcceptedRequests, Unstarted

logger = logging.getLogger("clipping.proxy")

HasRun = Callable[[str], Awaitable[bool]]
Publish = Callable[[str, bytes], Awaitable[None]]  # request id, message body


class Reconciler:
    def __init__(
        self,
        accepted: AcceptedRequests,
        outcomes: RequestOutcomes,
        has_run: HasRun,
        publish: Publish,
        *,
        unstarted_after: timedelta,
        max_publications: int,
    ) -> None:
        self._accepted = accepted
        self._outcomes = outcomes
        self._has_run = has_run
        self._publish = publish
        self._unstarted_after = unstarted_after
        self._max_publications = max_publications

    async def reconcile(self, now: datetime) -> None:
        """One pass over the open requests last published before ``now - unstarted_after``."""
        for pending in self._accepted.unstarted(published_before=now - self._unstarted_after):
            request_id = pending.request_id
            if await asyncio.to_thread(self._outcomes.read, request_id) is not None or (
                await self._has_run(request_id)
            ):
                self._accepted.close_request(request_id, now)
            elif pending.publications < self._max_publications:
                await self._publish_again(pending)
                self._accepted.published_again(request_id, now)
            else:
                await asyncio.to_thread(self._give_up, pending)
                self._accepted.close_request(request_id, now)

    async def _publish_again(self, pending: Unstarted) -> None:
        span = TraceContext.continued(pending.traceparent)
        with (
            in_span(span, "proxy: publish again"),
            log_context(request_id=pending.request_id, hand_id=pending.hand_id),
        ):
            logger.warning(
                "request %s has no run %s after publication %d; publishing it again",
                pending.request_id,
                self._unstarted_after,
                pending.publications,
            )
            # Published in the span: it goes with the message (clipping.pubsub).
            await self._publish(pending.request_id, pending.body.encode())

    def _give_up(self, pending: Unstarted) -> None:
        reason = (
            f"the request was accepted but never started: no flow run after "
            f"{pending.publications} publications, {self._unstarted_after} apart"
        )
        logger.error("request %s failed: %s", pending.request_id, reason)
        self._outcomes.fail(pending.request_id, pending.hand_id, reason)


async def reconcile_forever(
    reconciler: Reconciler,
    interval: timedelta,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """``reconcile`` every ``interval`` until cancelled; a failed pass is logged, not fatal."""
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            await reconciler.reconcile(clock())
        except Exception:
            logger.exception("reconciling accepted requests failed; next pass in %s", interval)
