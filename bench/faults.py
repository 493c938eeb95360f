"""Fault benchmark: a stream of clip requests with duplicates, bad messages and one fault of
each kind.

Starts a stack of its own (free ports, temporary directory, the default Pub/Sub emulator),
publishes --requests clip requests in five waves straight onto ``clipping-requests`` (every
--duplicate-every-th one twice), plus --invalid requests the listener must reject (each
twice) and one poison body nested 5,000 deep. Between the waves it kills the listener
(SIGKILL) and restarts it, kills a worker and restarts it, kills one running flow process,
kills the Pub/Sub emulator and restarts it, and stops the Prefect server for 20 s.
Throughout, a watch restarts the listener if it dies on its own and counts those deaths.
Then it counts, per request, the flow runs (Prefect), the objects (GCS) and the completion
messages of every status (clipping-complete): exactly one of each (no run and no object for
a rejected request) is the target.

    .venv/bin/python bench/faults.py --requests 200 --json

With --json the last line is one JSON object: requested, rejected_requested, completed,
rejected, failed, lost, duplicated (runs, objects or completion messages beyond one per
request, rejections included), listener_restarts (deaths the bench did not cause), and
timings.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipping.messages import ClipMode, ClipRequest, ClipState
from clipping.settings import get_settings
from stack.completions import CompletionLog
from stack.lifecycle import Stack
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION, ensure_sample_recording
from stack.throwaway import bench_stack

PREFECT_OUTAGE_S = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="bench/faults.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=200, help="distinct requests (default 200)")
    parser.add_argument(
        "--invalid", type=int, default=20, help="requests to be rejected (default 20)"
    )
    parser.add_argument("--duplicate-every", type=int, default=5, help="publish every Nth twice")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after (s)")
    parser.add_argument(
        "--database",
        choices=["postgresql", "sqlite"],
        default="postgresql",
        help="Prefect server database (default postgresql: SQLite locks under this load)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with bench_stack("faults", args.database) as stack:
        result = run(stack, args)
    result["database"] = args.database
    print_report(result)
    if args.json:
        print(json.dumps(result))


def run(stack: Stack, args: argparse.Namespace) -> dict:
    settings = get_settings()
    recording = ensure_sample_recording(
        stack.config.nas_root / "recordings" / "bench.mp4", seconds=20, size="320x240"
    )
    requests = [_request(recording, f"bench-{n:04d}") for n in range(args.requests)]
    # Valid JSON with a well-formed id that the model refuses (start after end).
    invalid = [_request(recording, f"bad-{n:04d}") for n in range(args.invalid)]
    invalid_bodies = [
        json.dumps({**request.model_dump(mode="json"), "start_seconds": 9.0}).encode()
        for request in invalid
    ]
    completions = CompletionLog(settings, COMPLETIONS_AUDIT_SUBSCRIPTION)
    publisher = pubsub_v1.PublisherClient()
    topic = settings.topic_path(settings.requests_topic)
    watch = ListenerWatch(stack)
    faults = [
        ("listener killed", watch.planned_restart),
        ("worker killed", lambda: _restart(stack, stack.config.workers[0])),
        ("flow process killed", lambda: _kill_a_flow_process(stack)),
        ("pubsub emulator killed", lambda: _restart(stack, "pubsub-emulator")),
        ("prefect server down", lambda: _prefect_outage(stack)),
    ]
    started = time.monotonic()
    published = 0

    def publish(data: bytes) -> None:
        nonlocal published
        publisher.publish(topic, data).result(timeout=60)
        published += 1

    watch.start()
    publish(POISON)
    for wave, (fault, inject) in enumerate(faults):
        for n, request in enumerate(requests[wave :: len(faults)]):
            for _ in range(2 if n % args.duplicate_every == 0 else 1):
                publish(request.model_dump_json().encode())
        for body in invalid_bodies[wave :: len(faults)]:
            publish(body)
            publish(body)
        time.sleep(2.0)
        print(f"{time.monotonic() - started:6.1f} s  {fault}", flush=True)
        inject()
    ids = [request.request_id for request in requests]
    rejected_ids = [request.request_id for request in invalid]
    try:
        completions.wait_for_all([*ids, *rejected_ids], timeout=args.timeout)
        completions.wait_for(None, timeout=60)  # the poison body's rejection
    except AssertionError as error:
        print(error)
    elapsed = time.monotonic() - started
    time.sleep(10.0)  # room for a late duplicate to show
    watch.stop()
    counts = _count(stack, [*ids, *rejected_ids], completions)
    poison_answers = completions.count(None)
    completions.close()
    valid = [counts[rid] for rid in ids]
    bad = [counts[rid] for rid in rejected_ids]
    return {
        "requested": len(ids),
        "rejected_requested": len(rejected_ids) + 1,
        "published": published,
        "completed": sum(1 for c in valid if c["statuses"] == [ClipState.COMPLETED]),
        "rejected": sum(1 for c in bad if c["statuses"] == [ClipState.REJECTED])
        + (poison_answers == 1),
        "failed": sum(1 for c in valid if ClipState.FAILED in c["statuses"]),
        "lost": sum(1 for c in counts.values() if not c["statuses"]) + (poison_answers == 0),
        "duplicated": sum(
            max(c["runs"] - 1, 0) + max(c["objects"] - 1, 0) + max(len(c["statuses"]) - 1, 0)
            for c in valid
        )
        + sum(c["runs"] + c["objects"] + max(len(c["statuses"]) - 1, 0) for c in bad)
        + max(poison_answers - 1, 0),
        "listener_restarts": watch.unplanned_deaths,
        "faults": [fault for fault, _ in faults],
        "elapsed_s": round(elapsed, 1),
        "clips_per_min": round(len(ids) / elapsed * 60, 1),
    }


POISON = b'{"request_id":"poison-1","hand_id":' + b"[" * 5000 + b"]" * 5000 + b"}"


def _request(recording: Path, request_id: str) -> ClipRequest:
    return ClipRequest(
        request_id=request_id,
        hand_id=f"hand-{request_id}",
        nas_video_path=str(recording),
        start_seconds=2.0,
        end_seconds=6.0,
        mode=ClipMode.COPY,
    )


class ListenerWatch:
    """Restarts the listener whenever it is found dead without the bench having killed it,
    and counts those deaths (the target is none)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.unplanned_deaths = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def planned_restart(self) -> None:
        with self._lock:
            _restart(self.stack, "listener")

    def _watch(self) -> None:
        while not self._stopped.wait(0.5):
            with self._lock:
                if "listener" not in self.stack.supervisor.running():
                    self.unplanned_deaths += 1
                    print("listener died on its own; restarting it", flush=True)
                    self.stack.start("listener")


def _count(stack: Stack, ids: list[str], completions: CompletionLog) -> dict[str, dict]:
    gcs = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
    objects = [blob.name for blob in gcs.list_blobs(get_settings().bucket)]
    counts = {}
    with stack.config.prefect_http() as api:
        for request_id in ids:
            runs = api.post(
                "/flow_runs/filter",
                json={"flow_runs": {"idempotency_key": {"any_": [request_id]}}},
            ).json()
            counts[request_id] = {
                "runs": len(runs),
                "objects": sum(1 for name in objects if name.endswith(f"/{request_id}.mp4")),
                "statuses": [m.status for m in completions.all_for(request_id)],
            }
    return counts


def _restart(stack: Stack, name: str) -> None:
    stack.stop(name, kill=True)
    time.sleep(2.0)
    stack.start(name)


def _kill_a_flow_process(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if b"PREFECT__FLOW_RUN_ID=" in environ and str(stack.config.dir).encode() in environ:
                os.kill(int(proc.name), signal.SIGKILL)
                return
        time.sleep(0.05)


def _prefect_outage(stack: Stack) -> None:
    stack.stop("prefect-server")
    time.sleep(PREFECT_OUTAGE_S)
    stack.start("prefect-server")


def print_report(result: dict) -> None:
    print(f"Prefect server on {result['database']}")
    print(
        f"requested {result['requested']} valid, {result['rejected_requested']} invalid "
        f"(published {result['published']} with duplicates)"
    )
    print(f"faults: {', '.join(result['faults'])}")
    print(
        f"completed {result['completed']}, rejected {result['rejected']}, failed {result['failed']}"
    )
    print(f"lost              {result['lost']:5d}   (target 0)")
    print(f"duplicated        {result['duplicated']:5d}   (target 0)")
    print(f"listener restarts {result['listener_restarts']:5d}   (target 0)")
    print(f"{result['elapsed_s']} s, {result['clips_per_min']} clips/min")


if __name__ == "__main__":
    main()
