"""What a clip's owner may do to it besides asking its status: cancel it, delete it.

Cancel (``POST /v1/clip/{id}/cancel``): the request's outcome becomes ``cancelled``
through ``RequestOutcomes.settle``, the one writer of outcomes, so exactly one completion
is announced; if the request already ended another way, that outcome stands and the cancel
is refused. Then its run, if it has one, is stopped in Prefect: a run that has not started
is set Cancelled; a Pending or Running one is set Cancelling, which its worker sees (an
event, or its poll) and answers by killing the flow process (its ffmpeg children die with
it, ``cutting.children``). A run that outlives the cancel uploads nothing: the flow reads
its outcome after the cut, before uploading, and deletes what it uploaded when settling
finds the request cancelled. A request still on its way (no run yet) never gets one: the
listener acknowledges a request that has an outcome.

Delete (``DELETE /v1/clip/{id}``): a request that has ended loses its clip, poster and
records (``_records/{id}/``); its accepted record stays as a tombstone, so its status is
404 saying it was deleted and its id cannot be taken again.
"""

import logging

from google.cloud.storage import Bucket
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Cancelling, State

from clipping.messages import ClipCompletion, ClipState, clip_object_of, poster_object_of
from clipping.outcomes import RequestOutcomes
from clipping.records import discard_objects, erase_records
from proxy.accepted import AcceptedRecord

logger = logging.getLogger("clipping.proxy")

CANCEL_REASON = "cancelled by its owner"
# A run in these states has a process (or is about to): its worker must kill it.
_STATES_WITH_A_PROCESS = {StateType.PENDING, StateType.RUNNING}
_FINAL_STATES = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED}


def cancel_outcome(outcomes: RequestOutcomes, record: AcceptedRecord) -> ClipCompletion:
    """Settle the request as cancelled; the outcome that stands (another one if it had
    ended already)."""
    return outcomes.settle(
        ClipCompletion(
            request_id=record.request_id,
            hand_id=record.fields.get("hand_id"),
            status=ClipState.CANCELLED,
            reason=CANCEL_REASON,
        )
    )


async def stop_run(prefect: PrefectClient, run: FlowRun) -> StateType | None:
    """Stop a cancelled request's run; the state it was set to (None: it had ended)."""
    if run.state_type is None or run.state_type in _FINAL_STATES:
        return None
    state: State
    if run.state_type in _STATES_WITH_A_PROCESS or run.state_type is StateType.CANCELLING:
        state = Cancelling(message=CANCEL_REASON)
    else:
        state = Cancelled(message=CANCEL_REASON)
    await prefect.set_flow_run_state(run.id, state, force=True)
    logger.info("request %s: flow run %s set %s", run.idempotency_key, run.id, state.type.value)
    return state.type


def clip_objects(record: AcceptedRecord, outcome: ClipCompletion | None) -> list[str]:
    """The objects a request may have stored: its clip and poster."""
    clip = outcome.object_name if outcome and outcome.object_name else None
    if clip is None:
        clip = clip_object_of(record.fields["hand_id"], record.request_id)
    return [clip, poster_object_of(clip)]


def discard_clip(
    bucket: Bucket, record: AcceptedRecord, outcome: ClipCompletion | None
) -> list[str]:
    """Delete the request's clip and poster, if stored; the names deleted."""
    return discard_objects(bucket, clip_objects(record, outcome))


def delete_clip(
    bucket: Bucket, record: AcceptedRecord, outcome: ClipCompletion | None
) -> list[str]:
    """Delete the request's clip, poster and records; the names deleted."""
    deleted = discard_clip(bucket, record, outcome) + erase_records(bucket, record.request_id)
    logger.info("request %s: deleted %s", record.request_id, ", ".join(deleted) or "nothing")
    return deleted
