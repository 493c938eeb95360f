"""End-to-end speed benchmark: POST -> completed through the whole stack, against the floor.

Starts a stack of its own (free ports, temporary directory; the Prefect server on a
throwaway PostgreSQL database unless --database sqlite, since SQLite locks under bursts),
hard-links a cached 1080p H.264/AAC recording (generated once into --cache-dir) onto its
NAS root, and measures:

- latency: --requests sequential requests of a --clip-seconds clip (--mode, default copy)
  through the proxy: POST /v1/clip/request, then GET /v1/clip/{id}/status every 50 ms
  until ``completed``; p50 and p95 of POST -> completed. Each request is broken down from
  the Prefect API (the flow run found by its idempotency key, its state history and its
  task runs): publish -> run created, pickup (Scheduled -> Pending), process start
  (Pending -> Running), the tasks cut / upload / sign / notify, the rest of the flow
  (Running -> Completed minus the tasks) and the tail (Completed -> the proxy says
  completed); the medians are printed.
- the orchestration floor: a trivial flow (``bench/noop_flow.py``) deployed on the same
  work pool with the job variables, pull steps and path of ``clip-hand``; --baseline-runs
  runs of it, each from ``create_flow_run_from_deployment`` to Completed (polling the API
  every 50 ms), interleaved with the requests so both see the same machine load.
- the work floor: the flow's own work done by hand in this process, interleaved too:
  ``cut_clip`` + ``write_poster`` of the same clip, then ``upload_file`` of clip and poster
  into the same GCS emulator. Floor = baseline p50 + cut p50 + upload p50: what no
  orchestration could go below (the emulator ingests ~150-200 MB/s, so a 225 MB clip's
  upload alone is over half the baseline).
- memory vs clip size: --short requests of a --short-clip-seconds clip; the flow
  process's peak RSS for short and long clips is compared with their sizes.
- accurate mode: --accurate requests in ``accurate`` mode (p50; 0 skips it).
- a burst: --burst requests posted at once; throughput in clips/min from the first POST
  to the last ``completed``, how many each worker (status ``agent_id``) ran, and how many
  were lost (not completed within --timeout).
- memory: peak RSS (VmHWM) of the workers, the listener, the proxy and every flow process
  (found by PREFECT__FLOW_RUN_ID in its environment; ffmpeg children counted apart),
  sampled every 0.2 s.

One warm-up request and one warm-up noop run precede the measurements. Clip objects are
deleted from the (in-memory) GCS emulator once a request is measured, so its memory stays
bounded.

Limits printed next to the figures: e2e p50 <= 1.3 x baseline p50; e2e p50 <= 30 s / 5
= 6 s; peak RSS of a flow process below the clip's size and growing by under 5 % of the
clip's growth from the short clip to the long one (it streams, never buffers).

    .venv/bin/python bench/e2e.py --json
    .venv/bin/python bench/e2e.py --requests 5 --burst 10 --accurate 0   # quick look

With --json the last line is one JSON object: p50_s, p95_s, baseline_p50_s, ratio_p50,
throughput_clips_per_min, lost, max_rss_mb (largest peak RSS of the measured processes),
floor_p50_s, ratio_to_floor, flow_rss_short_mb, breakdown_s (medians), rss_mb (per
component), burst_per_worker and more.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipping.messages import ClipMode
from clipping.settings import get_settings
from cutting import cut_clip, write_poster
from flows.upload import upload_file
from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.processes import flow_run_id_of, marked_processes
from stack.provision import ensure_sample_recording
from stack.throwaway import bench_stack

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipping-bench"
RECORDING_SECONDS = 150
RECORDING_SIZE = "1920x1080"
CLIP_START_S = 10.5  # mid-GOP (2 s GOPs)
POLL_S = 0.05
BASELINE_FACTOR = 1.3
TARGET_P50_S = 30.0 / 5
RSS_GROWTH_LIMIT = 0.05  # of the clip's growth
NOOP_ENTRYPOINT = "bench/noop_flow.py:noop"
TASKS = ("cut", "upload", "sign", "notify")
STEPS = (
    "publish_to_created",
    "pickup",
    "process_start",
    *TASKS,
    "flow_other",
    "tail",
)
STEP_LABELS = {
    "publish_to_created": "publish -> run created",
    "pickup": "pickup (Scheduled -> Pending)",
    "process_start": "process start (Pending -> Running)",
    "cut": "task cut",
    "upload": "task upload",
    "sign": "task sign",
    "notify": "task notify",
    "flow_other": "rest of the flow (Running -> Completed - tasks)",
    "tail": "tail (Completed -> proxy says completed)",
}
FINISHED = {"completed", "failed", "rejected"}


class BenchFailed(RuntimeError):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="bench/e2e.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=20, help="sequential requests (20)")
    parser.add_argument(
        "--mode", choices=["copy", "accurate", "reencode"], default="copy", help="cut mode (copy)"
    )
    parser.add_argument("--clip-seconds", type=float, default=120.0, help="clip length (120)")
    parser.add_argument(
        "--baseline-runs", type=int, default=None, help="noop flow runs (default: --requests)"
    )
    parser.add_argument("--accurate", type=int, default=3, help="accurate-mode requests (3)")
    parser.add_argument("--short", type=int, default=3, help="short-clip requests (3; 0 skips)")
    parser.add_argument(
        "--short-clip-seconds", type=float, default=20.0, help="short clip length (20)"
    )
    parser.add_argument("--burst", type=int, default=50, help="requests posted at once (50)")
    parser.add_argument(
        "--database",
        choices=["postgresql", "sqlite"],
        default="postgresql",
        help="Prefect server database (default postgresql: SQLite locks under bursts)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the recording is kept"
    )
    parser.add_argument(
        "--upload-chunk-mib",
        type=int,
        default=0,
        help="CLIPPING_UPLOAD_CHUNK_BYTES of the stack in MiB (default 0: the service "
        "default, 100 MiB; 1024: one request per clip)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds (600)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    if args.baseline_runs is None:
        args.baseline_runs = args.requests
    if args.clip_seconds + CLIP_START_S > RECORDING_SECONDS:
        parser.error(f"--clip-seconds must be at most {RECORDING_SECONDS - CLIP_START_S:g}")
    if args.upload_chunk_mib:
        # Chunks are streamed from disk (flows/upload.py): their size costs no memory, and
        # each one is a round trip (the in-memory GCS emulator also re-copies the object
        # per chunk).
        os.environ["CLIPPING_UPLOAD_CHUNK_BYTES"] = str(args.upload_chunk_mib * 2**20)
    cached = ensure_sample_recording(
        args.cache_dir / f"table-1080p-{RECORDING_SECONDS}s.mp4",
        RECORDING_SECONDS,
        size=RECORDING_SIZE,
    )
    with bench_stack("e2e", args.database) as stack:
        recording = _place_recording(cached, stack.config.nas_root / "recordings")
        sampler = RssSampler(stack)
        sampler.start()
        try:
            result = run(stack, recording, args, sampler)
        finally:
            sampler.stop()
    result["database"] = args.database
    result["upload_chunk_mib"] = args.upload_chunk_mib or get_settings().upload_chunk_bytes // 2**20
    print_report(result)
    if args.json:
        print(json.dumps(result))


def _place_recording(cached: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / cached.name
    try:
        os.link(cached, target)
    except OSError:
        shutil.copyfile(cached, target)
    return target


# --- the run -------------------------------------------------------------------------------


def run(stack: Stack, recording: Path, args: argparse.Namespace, sampler: "RssSampler") -> dict:
    config = stack.config
    bench = Bench(config, recording, args)
    try:
        noop_id = bench.deploy_noop()
        print(f"noop deployed with job variables {bench.noop_job_variables}", flush=True)
        bench.request(args.mode, "warmup-0")
        bench.noop_run(noop_id)
        latencies, breakdowns, baseline, baseline_breakdowns, sizes = [], [], [], [], []
        floors: list[tuple[float, float]] = []
        for n in range(max(args.requests, args.baseline_runs)):
            if n < args.requests:
                seconds, breakdown, size = bench.request(args.mode, f"seq-{n:03d}")
                latencies.append(seconds)
                breakdowns.append(breakdown)
                sizes.append(size)
                print(f"request {n + 1:3d}: {seconds:6.2f} s  {_brief(breakdown)}", flush=True)
            if n < args.baseline_runs:
                seconds, breakdown = bench.noop_run(noop_id)
                baseline.append(seconds)
                baseline_breakdowns.append(breakdown)
                print(f"noop    {n + 1:3d}: {seconds:6.2f} s  {_brief(breakdown)}", flush=True)
            if n < args.requests:
                floors.append(bench.work_floor())
                print(
                    f"floor   {n + 1:3d}: cut {floors[-1][0]:.2f} s  upload {floors[-1][1]:.2f} s"
                )
        short_sizes = []
        for n in range(args.short):
            seconds, _, size = bench.request(
                args.mode, f"short-{n:03d}", clip_seconds=args.short_clip_seconds
            )
            short_sizes.append(size)
            print(f"short   {n + 1:3d}: {seconds:6.2f} s  ({size / 2**20:.1f} MB)", flush=True)
        accurate, accurate_breakdowns = [], []
        for n in range(args.accurate):
            seconds, breakdown, _ = bench.request("accurate", f"acc-{n:03d}")
            accurate.append(seconds)
            accurate_breakdowns.append(breakdown)
            print(f"accurate {n + 1:2d}: {seconds:6.2f} s  {_brief(breakdown)}", flush=True)
        burst = bench.burst(args.burst, args.mode) if args.burst else {}
    finally:
        bench.close()
    time.sleep(0.5)  # a last RSS sample
    rss = sampler.report(bench.noop_run_ids, bench.run_modes)
    p50 = statistics.median(latencies)
    baseline_p50 = statistics.median(baseline)
    clip_mb = statistics.median(sizes) / 2**20
    cut_floor = statistics.median(cut for cut, _ in floors)
    upload_floor = statistics.median(upload for _, upload in floors)
    floor = baseline_p50 + cut_floor + upload_floor
    return {
        "mode": args.mode,
        "clip_seconds": args.clip_seconds,
        "requests": len(latencies),
        "p50_s": round(p50, 3),
        "p95_s": round(_p95(latencies), 3),
        "baseline_runs": len(baseline),
        "baseline_p50_s": round(baseline_p50, 3),
        "ratio_p50": round(p50 / baseline_p50, 3),
        "limit_ratio": BASELINE_FACTOR,
        "limit_p50_s": TARGET_P50_S,
        "cut_floor_s": round(cut_floor, 3),
        "upload_floor_s": round(upload_floor, 3),
        "floor_p50_s": round(floor, 3),
        "ratio_to_floor": round(p50 / floor, 3),
        "breakdown_s": _medians(breakdowns),
        "baseline_breakdown_s": _medians(baseline_breakdowns),
        "accurate_requests": len(accurate),
        "accurate_p50_s": round(statistics.median(accurate), 3) if accurate else None,
        "accurate_breakdown_s": _medians(accurate_breakdowns) if accurate else None,
        "burst": burst.get("requests", 0),
        "throughput_clips_per_min": burst.get("clips_per_min"),
        "burst_elapsed_s": burst.get("elapsed_s"),
        "burst_per_worker": burst.get("per_worker", {}),
        "lost": burst.get("lost", 0) + bench.lost,
        "failed": burst.get("failed", 0),
        "clip_size_mb": round(clip_mb, 1),
        "short_clip_seconds": args.short_clip_seconds if short_sizes else None,
        "clip_size_short_mb": (
            round(statistics.median(short_sizes) / 2**20, 1) if short_sizes else None
        ),
        "flow_rss_short_mb": rss.get(f"flow clip-hand {args.mode} short"),
        "rss_mb": rss,
        "max_rss_mb": max(rss.values()) if rss else None,
        "flow_rss_mb": rss.get(f"flow clip-hand {args.mode}"),
        "latencies_s": [round(s, 3) for s in latencies],
        "baseline_s": [round(s, 3) for s in baseline],
    }


class Bench:
    def __init__(self, config: StackConfig, recording: Path, args: argparse.Namespace) -> None:
        self.config = config
        self.recording = recording
        self.args = args
        self.settings = get_settings()
        headers = {"Authorization": f"Bearer {config.api_key('operator')}"}
        self.proxy = httpx.Client(base_url=config.proxy_url, headers=headers, timeout=30.0)
        self.api = config.prefect_http()
        self.gcs = storage.Client(
            project=self.settings.gcp_project, credentials=AnonymousCredentials()
        ).bucket(self.settings.bucket)
        self.noop_run_ids: set[str] = set()
        self.run_modes: dict[str, str] = {}  # flow run id -> cut mode
        self.noop_job_variables: dict[str, Any] = {}
        self.lost = 0

    def close(self) -> None:
        self.proxy.close()
        self.api.close()

    # clip requests

    def body(self, mode: str, request_id: str, clip_seconds: float | None = None) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "hand_id": f"hand-{request_id}",
            "nas_video_path": str(self.recording),
            "start_seconds": CLIP_START_S,
            "end_seconds": CLIP_START_S + (clip_seconds or self.args.clip_seconds),
            "mode": mode,
        }

    def post(self, body: dict[str, Any]) -> float:
        """POST the request (retrying a 429 after its Retry-After); the wall time it was sent."""
        while True:
            sent = time.time()
            answer = self.proxy.post("/v1/clip/request", json=body)
            if answer.status_code == 202:
                return sent
            if answer.status_code == 429:
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            raise BenchFailed(f"request refused: {answer.status_code} {answer.text}")

    def status(self, request_id: str) -> dict[str, Any] | None:
        try:
            answer = self.proxy.get(f"/v1/clip/{request_id}/status")
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def request(
        self, mode: str, request_id: str, clip_seconds: float | None = None
    ) -> tuple[float, dict[str, float], int]:
        """One request, POST -> completed: seconds, its breakdown, the clip's size."""
        body = self.body(mode, request_id, clip_seconds)
        posted = self.post(body)
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            status = self.status(request_id)
            if status and status["status"] in FINISHED:
                seen = time.time()
                break
            time.sleep(POLL_S)
        else:
            self.lost += 1
            raise BenchFailed(f"request {request_id} not finished after {self.args.timeout} s")
        if status["status"] != "completed":
            raise BenchFailed(f"request {request_id} {status['status']}: {status.get('reason')}")
        self.run_modes[status["flow_run_id"]] = f"{mode} short" if clip_seconds else mode
        self.delete_objects(status)
        breakdown = self.breakdown(self.run_of(request_id), posted, seen)
        return seen - posted, breakdown, status["size_bytes"]

    def delete_objects(self, status: dict[str, Any]) -> None:
        name = status["object_name"]
        for object_name in (name, name.rsplit(".", 1)[0] + ".jpg"):
            with contextlib.suppress(NotFound):
                self.gcs.blob(object_name).delete()

    def work_floor(self) -> tuple[float, float]:
        """The flow's work by hand, here: cut and poster, then their upload; seconds each."""
        end = CLIP_START_S + self.args.clip_seconds
        with tempfile.TemporaryDirectory(prefix="floor-") as scratch:
            started = time.perf_counter()
            clip = cut_clip(
                self.recording,
                CLIP_START_S,
                end,
                ClipMode(self.args.mode),
                Path(scratch) / "clip.mp4",
            )
            poster = write_poster(clip.path, Path(scratch) / "poster.jpg")
            cut_s = time.perf_counter() - started
            files = {clip.path: "video/mp4", poster: "image/jpeg"}
            blobs = [self.gcs.blob(f"floor/{uuid4()}{path.suffix}") for path in files]
            started = time.perf_counter()
            for blob, (path, content_type) in zip(blobs, files.items(), strict=True):
                upload_file(blob, path, content_type, self.settings.upload_chunk_bytes)
            upload_s = time.perf_counter() - started
        for blob in blobs:
            blob.delete()
        return cut_s, upload_s

    # the Prefect side

    def run_of(self, request_id: str) -> dict[str, Any]:
        runs = self.api.post(
            "/flow_runs/filter",
            json={"flow_runs": {"idempotency_key": {"any_": [request_id]}}, "limit": 1},
        ).json()
        if not runs:
            raise BenchFailed(f"no flow run for {request_id}")
        return runs[0]

    def breakdown(
        self, flow_run: dict[str, Any], posted: float | None, seen: float
    ) -> dict[str, float]:
        states = self.api.get("/flow_run_states/", params={"flow_run_id": flow_run["id"]}).json()
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for state in sorted(states, key=lambda s: s["timestamp"]):
            at = _ts(state["timestamp"])
            first.setdefault(state["type"], at)
            last[state["type"]] = at
        created = _ts(flow_run["created"])
        scheduled = first.get("SCHEDULED", created)
        completed = last["COMPLETED"]
        running = first["RUNNING"]
        result = {
            "pickup": first["PENDING"] - scheduled,
            "process_start": running - first["PENDING"],
            "tail": seen - completed,
            "run": completed - running,
        }
        if posted is not None:
            result["publish_to_created"] = created - posted
        task_runs = self.api.post(
            "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}}
        ).json()
        in_tasks = 0.0
        for task_run in task_runs:
            if not task_run.get("start_time") or not task_run.get("end_time"):
                continue
            name = task_run["name"].rsplit("-", 1)[0]
            seconds = _ts(task_run["end_time"]) - _ts(task_run["start_time"])
            result[name] = result.get(name, 0.0) + seconds
            in_tasks += seconds
        if posted is not None:
            result["flow_other"] = completed - running - in_tasks
        return result

    def deploy_noop(self) -> UUID:
        """``noop`` on clip-hand's pool, with its job variables, pull steps and path."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            clip = client.read_deployment_by_name(self.settings.deployment)
            self.noop_job_variables = clip.job_variables
            return client.create_deployment(
                flow_id=client.create_flow_from_name("noop"),
                name="noop",
                work_pool_name=clip.work_pool_name,
                work_queue_name=clip.work_queue_name,
                path=clip.path,
                entrypoint=NOOP_ENTRYPOINT,
                pull_steps=clip.pull_steps,
                job_variables=clip.job_variables,
                parameter_openapi_schema={"type": "object", "properties": {}},
                enforce_parameter_schema=False,
            )

    def noop_run(self, deployment_id: UUID) -> tuple[float, dict[str, float]]:
        from prefect.client.orchestration import get_client

        started = time.time()
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(deployment_id)
        run_id = str(flow_run.id)
        self.noop_run_ids.add(run_id)
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            state = self.api.get(f"/flow_runs/{run_id}").json()["state"] or {}
            if state.get("type") == "COMPLETED":
                seen = time.time()
                break
            if state.get("type") in {"FAILED", "CRASHED", "CANCELLED"}:
                raise BenchFailed(f"noop run {run_id} {state['type']}: {state.get('message')}")
            time.sleep(POLL_S)
        else:
            raise BenchFailed(f"noop run {run_id} not completed after {self.args.timeout} s")
        breakdown = self.breakdown(self.api.get(f"/flow_runs/{run_id}").json(), None, seen)
        return seen - started, breakdown

    # the burst

    def burst(self, count: int, mode: str) -> dict[str, Any]:
        ids = [f"burst-{n:03d}" for n in range(count)]
        with ThreadPoolExecutor(max_workers=min(count, 32)) as pool:
            posted = list(pool.map(lambda rid: self.post(self.body(mode, rid)), ids))
        first_post = min(posted)
        print(f"burst: {count} requests posted in {max(posted) - first_post:.2f} s", flush=True)
        pending = set(ids)
        done: dict[str, tuple[float, dict[str, Any]]] = {}
        deadline = time.monotonic() + self.args.timeout
        while pending and time.monotonic() < deadline:
            for request_id in sorted(pending):
                status = self.status(request_id)
                if status and status["status"] in FINISHED:
                    done[request_id] = (time.time(), status)
                    pending.discard(request_id)
                    if status["status"] == "completed":
                        self.run_modes[status["flow_run_id"]] = mode
                        self.delete_objects(status)
            time.sleep(0.1)
        completed = {rid: v for rid, v in done.items() if v[1]["status"] == "completed"}
        last = max((at for at, _ in completed.values()), default=time.time())
        elapsed = last - first_post
        per_worker = Counter(status.get("agent_id") or "?" for _, status in completed.values())
        return {
            "requests": count,
            "elapsed_s": round(elapsed, 2),
            "clips_per_min": round(len(completed) / elapsed * 60, 1),
            "per_worker": dict(sorted(per_worker.items())),
            "lost": count - len(completed),
            "failed": len(done) - len(completed),
        }


# --- memory ----------------------------------------------------------------------------------


class RssSampler:
    """Peak RSS (VmHWM) of the stack's processes and of every flow process, every 0.2 s."""

    COMPONENTS = ("listener", "proxy")

    def __init__(self, stack: Stack, interval: float = 0.2) -> None:
        self.stack = stack
        self.interval = interval
        self.state_dir = str(stack.config.dir)
        self.components = {*self.COMPONENTS, *stack.config.workers}
        self.peaks: dict[str, float] = {}
        # pid -> (flow run id, "flow" or "child", peak MB)
        self.flow_processes: dict[int, tuple[str, str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as error:  # a stopping stack; keep sampling
                print(f"rss sampler: {error}", file=sys.stderr)

    def sample(self) -> None:
        for name, pid in self.stack.supervisor.running().items():
            if name in self.components and (mb := _vm_hwm_mb(pid)) is not None:
                self.peaks[name] = max(self.peaks.get(name, 0.0), mb)
        for pid in marked_processes(self.state_dir):
            run_id = flow_run_id_of(pid)
            if run_id is None:
                continue
            # Name and VmHWM from one read: a child read across its exec would otherwise
            # pair ffmpeg's name with the Python parent's memory.
            try:
                status = _status_fields(Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue
            if "VmHWM" not in status:
                continue
            kind = "flow" if status["Name"].startswith("python") else "child"
            mb = int(status["VmHWM"].split()[0]) / 1024
            known = self.flow_processes.get(pid)
            peak = max(mb, known[2]) if known and known[0] == run_id else mb
            self.flow_processes[pid] = (run_id, kind, peak)

    def report(self, noop_run_ids: set[str], run_modes: dict[str, str]) -> dict[str, float]:
        """Peaks per component; flow processes per flow and cut mode, ffmpeg children apart."""
        report = {name: round(mb, 1) for name, mb in sorted(self.peaks.items())}
        groups: dict[str, float] = {}
        for run_id, kind, mb in self.flow_processes.values():
            flow = "noop" if run_id in noop_run_ids else f"clip-hand {run_modes.get(run_id, '?')}"
            key = f"flow {flow}" if kind == "flow" else f"ffmpeg of {flow}"
            groups[key] = max(groups.get(key, 0.0), mb)
        report.update({key: round(mb, 1) for key, mb in sorted(groups.items())})
        return report


def _status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        status = _status_fields(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(status["VmHWM"].split()[0]) / 1024 if "VmHWM" in status else None


# --- figures -----------------------------------------------------------------------------------


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def _medians(breakdowns: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in (*STEPS, "run") if any(k in b for b in breakdowns)]
    return {
        key: round(statistics.median(b[key] for b in breakdowns if key in b), 3) for key in keys
    }


def _brief(breakdown: dict[str, float]) -> str:
    return " ".join(f"{key}={breakdown[key]:.2f}" for key in (*STEPS, "run") if key in breakdown)


def _verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def print_report(result: dict) -> None:
    p50, base = result["p50_s"], result["baseline_p50_s"]
    print()
    print(
        f"Prefect server on {result['database']}; {result['mode']} mode, "
        f"{result['clip_seconds']:g} s clips of a 1080p recording ({result['clip_size_mb']} MB)"
    )
    print(f"upload chunk {result['upload_chunk_mib']} MiB (CLIPPING_UPLOAD_CHUNK_BYTES)")
    print(
        f"e2e POST -> completed, {result['requests']} requests: "
        f"p50 {p50:.2f} s, p95 {result['p95_s']:.2f} s"
    )
    print(f"baseline noop flow, {result['baseline_runs']} runs: p50 {base:.2f} s")
    limit = BASELINE_FACTOR * base
    print(
        f"  e2e p50 {p50:6.2f} s  vs 1.3 x baseline p50 {limit:6.2f} s   "
        f"ratio {result['ratio_p50']:.2f}  {_verdict(p50 <= limit)}"
    )
    print(
        f"  work floor: baseline p50 + cut {result['cut_floor_s']:.2f} s + upload "
        f"{result['upload_floor_s']:.2f} s (by hand, same emulator) = {result['floor_p50_s']:.2f} s"
        f"   e2e p50 / floor {result['ratio_to_floor']:.2f}"
    )
    print(
        f"  e2e p50 {p50:6.2f} s  vs 30 s / 5           {TARGET_P50_S:6.2f} s   "
        f"{_verdict(p50 <= TARGET_P50_S)}"
    )
    print("breakdown (medians, s)            clip-hand   noop")
    noop = result["baseline_breakdown_s"]
    for key, seconds in result["breakdown_s"].items():
        label = STEP_LABELS.get(key, "Running -> Completed")
        floor = f"{noop[key]:6.2f}" if key in noop else "     -"
        print(f"  {label:<48} {seconds:6.2f}   {floor}")
    if result["accurate_p50_s"] is not None:
        acc = result["accurate_breakdown_s"]
        print(
            f"accurate mode, {result['accurate_requests']} requests: "
            f"p50 {result['accurate_p50_s']:.2f} s (cut {acc.get('cut', 0):.2f} s)"
        )
    if result["burst"]:
        print(
            f"burst of {result['burst']}: {result['throughput_clips_per_min']} clips/min "
            f"({result['burst_elapsed_s']} s), per worker {result['burst_per_worker']}, "
            f"failed {result['failed']}"
        )
    print(f"  lost {result['lost']}   (target 0)  {_verdict(result['lost'] == 0)}")
    print("peak RSS (MB)")
    for name, mb in result["rss_mb"].items():
        print(f"  {name:<24} {mb:8.1f}")
    flow_mb = result["flow_rss_mb"]
    if flow_mb is not None:
        print(
            f"  flow process ({result['mode']}) {flow_mb:.1f} MB vs clip size "
            f"{result['clip_size_mb']} MB  "
            f"{_verdict(flow_mb < result['clip_size_mb'])}"
        )
    short_mb = result["flow_rss_short_mb"]
    if flow_mb is not None and short_mb is not None:
        clip_growth = result["clip_size_mb"] - result["clip_size_short_mb"]
        print(
            f"  flow process {short_mb:.1f} MB for a {result['short_clip_seconds']:g} s clip "
            f"({result['clip_size_short_mb']} MB), {flow_mb:.1f} MB for a "
            f"{result['clip_seconds']:g} s clip: grows {flow_mb - short_mb:+.1f} MB for "
            f"{clip_growth:+.1f} MB of clip (limit {RSS_GROWTH_LIMIT:.0%})  "
            f"{_verdict(flow_mb - short_mb <= RSS_GROWTH_LIMIT * clip_growth)}"
        )


if __name__ == "__main__":
    main()
