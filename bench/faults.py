"""Fault benchmark: a stream of clip requests with duplicates and one fault of each kind.

Starts a stack of its own (free ports, temporary directory), publishes --requests clip
requests in four waves straight onto ``clipping-requests`` (every --duplicate-every-th one
twice), and between the waves: kills the listener (SIGKILL) and restarts it, kills a
worker (SIGKILL) and restarts it, kills one running flow process, and stops the Prefect
server for 20 s. Then it counts, per request, the flow runs (Prefect), the objects (GCS) and
the completion messages (clipping-complete): exactly one of each is the target.

    .venv/bin/python bench/faults.py --requests 200 --json

With --json the last line is one JSON object: requested, completed, lost, duplicated
(runs, objects or completion messages beyond one per request), failed, and timings.
"""

import argparse
import json
import os
import signal
import sys
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
    requests = [
        ClipRequest(
            request_id=f"bench-{n:04d}",
            hand_id=f"hand-{n:04d}",
            nas_video_path=str(recording),
            start_seconds=2.0,
            end_seconds=6.0,
            mode=ClipMode.COPY,
        )
        for n in range(args.requests)
    ]
    completions = CompletionLog(settings, COMPLETIONS_AUDIT_SUBSCRIPTION)
    publisher = pubsub_v1.PublisherClient()
    topic = settings.topic_path(settings.requests_topic)
    faults = [
        ("listener killed", lambda: _restart(stack, "listener")),
        ("worker killed", lambda: _restart(stack, stack.config.workers[0])),
        ("flow process killed", lambda: _kill_a_flow_process(stack)),
        ("prefect server down", lambda: _prefect_outage(stack)),
    ]
    started = time.monotonic()
    waves = [requests[i :: len(faults)] for i in range(len(faults))]
    published = 0
    for wave, (fault, inject) in zip(waves, faults, strict=True):
        for n, request in enumerate(wave):
            copies = 2 if n % args.duplicate_every == 0 else 1
            for _ in range(copies):
                publisher.publish(topic, request.model_dump_json().encode()).result(timeout=30)
                published += 1
        time.sleep(2.0)
        print(f"{time.monotonic() - started:6.1f} s  {fault}", flush=True)
        inject()
    ids = [request.request_id for request in requests]
    try:
        completions.wait_for_all(ids, timeout=args.timeout)
    except AssertionError as error:
        print(error)
    elapsed = time.monotonic() - started
    time.sleep(10.0)  # room for a late duplicate to show
    counts = _count(stack, ids, completions)
    completions.close()
    return {
        "requested": len(ids),
        "published": published,
        "completed": sum(1 for c in counts.values() if c["completed"]),
        "failed": sum(1 for c in counts.values() if c["failed"]),
        "lost": sum(1 for c in counts.values() if c["messages"] == 0),
        "duplicated": sum(
            max(c["runs"] - 1, 0) + max(c["objects"] - 1, 0) + max(c["messages"] - 1, 0)
            for c in counts.values()
        ),
        "faults": [fault for fault, _ in faults],
        "elapsed_s": round(elapsed, 1),
        "clips_per_min": round(len(ids) / elapsed * 60, 1),
    }


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
            messages = completions.all_for(request_id)
            counts[request_id] = {
                "runs": len(runs),
                "objects": sum(1 for name in objects if name.endswith(f"/{request_id}.mp4")),
                "messages": len(messages),
                "completed": any(m.status is ClipState.COMPLETED for m in messages),
                "failed": any(m.status is ClipState.FAILED for m in messages),
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
    print(f"requested {result['requested']} (published {result['published']} with duplicates)")
    print(f"faults: {', '.join(result['faults'])}")
    print(f"completed {result['completed']}, failed {result['failed']}")
    print(f"lost       {result['lost']:5d}   (target 0)")
    print(f"duplicated {result['duplicated']:5d}   (target 0)")
    print(f"{result['elapsed_s']} s, {result['clips_per_min']} clips/min")


if __name__ == "__main__":
    main()
