"""Watching clipping-complete: what the demo, the tests and the benchmarks count."""

import threading
from collections import defaultdict

from google.cloud import pubsub_v1

from clipping.messages import ClipCompletion
from clipping.settings import Settings


class CompletionLog:
    """Every message on clipping-complete, by request id, read from an audit subscription."""

    def __init__(self, settings: Settings, subscription: str) -> None:
        self._by_request: dict[str | None, list[ClipCompletion]] = defaultdict(list)
        self._changed = threading.Condition()
        self._subscriber = pubsub_v1.SubscriberClient()
        self._pull = self._subscriber.subscribe(
            settings.subscription_path(subscription), self._receive
        )

    def _receive(self, message: pubsub_v1.subscriber.message.Message) -> None:
        completion = ClipCompletion.model_validate_json(message.data)
        with self._changed:
            self._by_request[completion.request_id].append(completion)
            self._changed.notify_all()
        message.ack()

    def wait_for(self, request_id: str | None, timeout: float = 60.0) -> ClipCompletion:
        with self._changed:
            if not self._changed.wait_for(lambda: self._by_request[request_id], timeout):
                raise AssertionError(f"no completion for {request_id!r} within {timeout} s")
            return self._by_request[request_id][0]

    def wait_for_all(self, request_ids: list[str], timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: all(self._by_request[rid] for rid in request_ids), timeout
            ):
                missing = [rid for rid in request_ids if not self._by_request[rid]]
                raise AssertionError(f"{len(missing)} requests not completed: {missing[:5]}")

    def count(self, request_id: str | None) -> int:
        return len(self.all_for(request_id))

    def all_for(self, request_id: str | None) -> list[ClipCompletion]:
        with self._changed:
            return list(self._by_request[request_id])

    def close(self) -> None:
        self._pull.cancel()
        self._subscriber.close()
