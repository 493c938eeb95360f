"""Failover benchmark: a NAS agent lost mid-clip, and the false alarms of the detector.

Starts a stack of its own (free ports, temporary directory, Prefect on PostgreSQL unless
--database sqlite) and measures, against the targets of issue 6:

- baseline: --baseline undisturbed runs of the trial request (a 36 s reencode of a 640x360
  recording); their median request -> completed time is the clip time (clip_s).
- trials: --trials times, requests the same clip, waits until it is cutting, then kills
  its worker (SIGKILL) and its flow process together, as a lost host. Nothing reports the
  crash: the liveness automation ("crash runs that stopped beating") must notice the
  silence, the crash automation reschedules the run and the other agent completes it.
  Per trial: detect_s (the Crashed state's time - the kill; target <= 30 s),
  kill -> completed (the proxy reports completed; target <= 30 s + clip_s), one
  completion message, one run, one clip object. The killed worker is then restarted.
- soak: --soak normal runs (copy, accurate and reencode, some of ~25 s, --concurrency at
  once) with the automations active; every Crashed state in their histories is a false
  crash (target 0), as is any Crashed beyond the one expected in a trial run.

    .venv/bin/python bench/failover.py --trials 5 --soak 50 --json

With --json the last line is one JSON object: trials, completed_once, lost, duplicated
(runs, objects or completion messages beyond one per request, trials and soak), detect_s
median/max, kill_to_completed_s median/max, clip_s, false_crashes, soak figures, timings.
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipping.settings import get_settings
from flows.liveness import ALIVE_WITHIN
from stack.completions import CompletionLog
from stack.lifecycle import Stack
from stack.processes import kill_flow_processes
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION, ensure_sample_recording
from stack.throwaway import bench_stack

DETECT_TARGET_S = 30.0
# On top of the clip time: detection, rescheduling and a new flow process.
RECOVERY_TARGET_S = 30.0
RUN_TIMEOUT_S = 300.0
DUPLICATE_GRACE_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="bench/failover.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=5, help="lost-host trials (default 5)")
    parser.add_argument("--soak", type=int, default=50, help="normal runs to watch (default 50)")
    parser.add_argument("--baseline", type=int, default=3, help="undisturbed runs (default 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="soak runs at once (default 4)")
    parser.add_argument(
        "--database",
        choices=["postgresql", "sqlite"],
        default="postgresql",
        help="Prefect server database (default postgresql, the production shape)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with bench_stack("failover", args.database) as stack:
        result = Bench(stack).run(args)
    result["database"] = args.database
    print_report(result)
    if args.json:
        print(json.dumps(result))


class Bench:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        config = stack.config
        self.proxy = httpx.Client(
            base_url=config.proxy_url,
            headers={"Authorization": f"Bearer {config.api_key('operator')}"},
            timeout=30.0,
        )
        self.prefect = config.prefect_http()
        self.gcs = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
        self.started = time.monotonic()

    def log(self, text: str) -> None:
        print(f"{time.monotonic() - self.started:6.1f} s  {text}", flush=True)

    def run(self, args: argparse.Namespace) -> dict:
        recordings = self.stack.config.nas_root / "recordings"
        trial_recording = ensure_sample_recording(recordings / "table-640.mp4", 40, "640x360")
        long_recording = ensure_sample_recording(recordings / "table-long.mp4", 180, "640x360")
        trial_body = {
            "hand_id": "hand-trial",
            "nas_video_path": str(trial_recording),
            "start_seconds": 2.0,
            "end_seconds": 38.0,
            "mode": "reencode",
        }
        self.completions = CompletionLog(get_settings(), COMPLETIONS_AUDIT_SUBSCRIPTION)
        try:
            baseline = [self.undisturbed(trial_body, n) for n in range(args.baseline)]
            trials = [self.trial(trial_body, n) for n in range(args.trials)]
            soak = self.soak(args.soak, args.concurrency, trial_recording, long_recording)
            time.sleep(DUPLICATE_GRACE_S)  # room for a late duplicate to show
            counts = [self.count(c["request_id"], c["hand_id"]) for c in trials + soak]
        finally:
            self.completions.close()
        return summarize(baseline, trials, soak, counts, time.monotonic() - self.started)

    # -- the three phases ------------------------------------------------------------------

    def undisturbed(self, body: dict, n: int) -> dict:
        requested = time.monotonic()
        request_id = self.request({**body, "hand_id": f"hand-baseline-{n}"})
        status = self.wait_until_finished(request_id)
        clip_s = time.monotonic() - requested
        history = self.history(status["flow_run_id"])
        running = [s for s in history if s["type"] == "RUNNING"]
        flow_s = _at(history[-1]) - _at(running[0]) if running else None
        self.log(
            f"baseline {n + 1}: {status['status']} in {clip_s:.1f} s (Running {_fmt(flow_s)} s)"
        )
        return {"clip_s": clip_s, "flow_s": flow_s, "status": status["status"]}

    def trial(self, body: dict, n: int) -> dict:
        hand_id = f"hand-trial-{n}"
        request_id = self.request({**body, "hand_id": hand_id})
        run_id, agent = self.wait_until_cutting(request_id)
        worker_pid = self.stack.supervisor.running()[agent]
        killed_at, killed_mono = time.time(), time.monotonic()
        os.kill(worker_pid, signal.SIGKILL)  # first: a live worker would report the crash
        killed = kill_flow_processes(run_id)
        self.log(f"trial {n + 1}: killed {agent} (pid {worker_pid}) and flow pids {killed}")
        outcome = {"request_id": request_id, "hand_id": hand_id, "agent": agent}
        try:
            status = self.wait_until_finished(request_id)
            outcome["kill_to_completed_s"] = time.monotonic() - killed_mono
            outcome["status"] = status["status"]
            outcome["completed_on"] = status.get("agent_id")
        except TimeoutError:
            outcome["status"] = "timeout"
        finally:
            self.stack.stop(agent, kill=True)  # forget the dead worker's pid file
            self.stack.start(agent)
        history = self.history(run_id)
        crashed = [s for s in history if s["type"] == "CRASHED"]
        outcome["killed_flow_processes"] = len(killed)
        outcome["crashes"] = len(crashed)
        if crashed:
            outcome["detect_s"] = _at(crashed[0]) - killed_at
            outcome["detected_by_liveness"] = "no liveness beat" in (crashed[0]["message"] or "")
        self.log(
            f"trial {n + 1}: {outcome['status']} on {outcome.get('completed_on')}, "
            f"crashed after {_fmt(outcome.get('detect_s'))} s, "
            f"completed after {_fmt(outcome.get('kill_to_completed_s'))} s"
        )
        return outcome

    def soak(self, runs: int, concurrency: int, recording: Path, long_recording: Path) -> list:
        bodies = [_soak_body(n, recording, long_recording) for n in range(runs)]

        def one(body: dict) -> dict:
            request_id = self.request(body)
            try:
                status = self.wait_until_finished(request_id)["status"]
            except TimeoutError:
                status = "timeout"
            return {"request_id": request_id, "hand_id": body["hand_id"], "status": status}

        self.log(f"soak: {runs} runs, {concurrency} at once")
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            outcomes = list(pool.map(one, bodies))
        for outcome in outcomes:
            run = self.run_of(outcome["request_id"])
            history = self.history(run["id"]) if run else []
            outcome["crashes"] = sum(1 for s in history if s["type"] == "CRASHED")
            running = [s for s in history if s["type"] == "RUNNING"]
            if running and history[-1]["type"] == "COMPLETED":
                outcome["flow_s"] = _at(history[-1]) - _at(running[0])
        self.log(f"soak: done, {sum(o['crashes'] for o in outcomes)} crashed states")
        return outcomes

    # -- helpers -----------------------------------------------------------------------------

    def request(self, body: dict) -> str:
        answer = self.proxy.post("/v1/clip/request", json=body)
        answer.raise_for_status()
        return answer.json()["request_id"]

    def status(self, request_id: str) -> dict:
        return self.proxy.get(f"/v1/clip/{request_id}/status").json()

    def wait_until_finished(self, request_id: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            status = self.status(request_id)
            if status["status"] in {"completed", "failed", "rejected"}:
                return status
            time.sleep(0.1)
        raise TimeoutError(f"{request_id} not finished after {RUN_TIMEOUT_S} s")

    def wait_until_cutting(self, request_id: str) -> tuple[str, str]:
        """The run's id and its agent (admin API), once its ``cut`` task runs."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            run_id = self.status(request_id).get("flow_run_id")
            if run_id and self.task_state(run_id, "cut") == "RUNNING":
                for agent in self.proxy.get("/v1/admin/agents").json():
                    if any(run["flow_run_id"] == run_id for run in agent["runs"]):
                        return run_id, agent["agent_id"]
            time.sleep(0.05)
        raise TimeoutError(f"the run of {request_id} never started cutting")

    def task_state(self, flow_run_id: str, task: str) -> str | None:
        runs = self.prefect.post(
            "/task_runs/filter",
            json={
                "flow_runs": {"id": {"any_": [flow_run_id]}},
                "task_runs": {"name": {"like_": task}},
            },
        ).json()
        return runs[0]["state_type"] if runs else None

    def history(self, flow_run_id: str) -> list[dict]:
        states = self.prefect.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
        return sorted(states, key=lambda state: state["timestamp"])

    def run_of(self, request_id: str) -> dict | None:
        runs = self.runs_of(request_id)
        return runs[0] if runs else None

    def runs_of(self, request_id: str) -> list[dict]:
        return self.prefect.post(
            "/flow_runs/filter",
            json={"flow_runs": {"idempotency_key": {"any_": [request_id]}}},
        ).json()

    def count(self, request_id: str, hand_id: str) -> dict:
        bucket = get_settings().bucket
        objects = [b.name for b in self.gcs.list_blobs(bucket, prefix=f"{hand_id}/")]
        return {
            "runs": len(self.runs_of(request_id)),
            # Each request has a hand of its own: any second clip under it is a duplicate.
            "objects": sum(1 for name in objects if name.endswith(".mp4")),
            "messages": self.completions.count(request_id),
        }


def _soak_body(n: int, recording: Path, long_recording: Path) -> dict:
    body = {"hand_id": f"hand-soak-{n:03d}", "nas_video_path": str(recording)}
    kind = n % 5
    if kind == 0:  # a long run: ~25 s of reencoding, more under the soak's load
        return {**body, "hand_id": f"hand-soak-long-{n:03d}", "start_seconds": 1.0,
                "nas_video_path": str(long_recording), "end_seconds": 179.0,
                "mode": "reencode"}  # fmt: skip
    if kind == 1:
        return {**body, "start_seconds": 3.0, "end_seconds": 33.0, "mode": "reencode"}
    if kind == 2:
        return {**body, "start_seconds": 5.5, "end_seconds": 19.5, "mode": "accurate"}
    return {**body, "start_seconds": 4.0, "end_seconds": 16.0, "mode": "copy"}


def _at(state: dict) -> float:
    return datetime.fromisoformat(state["timestamp"].replace("Z", "+00:00")).timestamp()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _stat(values: list[float], how: Callable[[list[float]], float]) -> float | None:
    return round(how(values), 1) if values else None


def summarize(
    baseline: list[dict], trials: list[dict], soak: list[dict], counts: list[dict], elapsed: float
) -> dict:
    clip_s = _stat([b["clip_s"] for b in baseline], statistics.median)
    flow_s = _stat([b["flow_s"] for b in baseline if b["flow_s"] is not None], statistics.median)
    detect = [t["detect_s"] for t in trials if "detect_s" in t]
    recovered = [t["kill_to_completed_s"] for t in trials if "kill_to_completed_s" in t]
    completed_once = sum(
        1
        for trial, c in zip(trials, counts[: len(trials)], strict=True)
        if trial["status"] == "completed" and c == {"runs": 1, "objects": 1, "messages": 1}
    )
    soak_long = [o["flow_s"] for o in soak if "-long-" in o["hand_id"] and "flow_s" in o]
    return {
        "trials": len(trials),
        "completed_once": completed_once,
        "lost": sum(1 for c in counts if c["messages"] == 0),
        "duplicated": sum(
            max(c["runs"] - 1, 0) + max(c["objects"] - 1, 0) + max(c["messages"] - 1, 0)
            for c in counts
        ),
        "detected": len(detect),
        "detected_by_liveness": sum(1 for t in trials if t.get("detected_by_liveness")),
        "completed_elsewhere": sum(
            1 for t in trials if t.get("completed_on") and t["completed_on"] != t["agent"]
        ),
        "detect_s": [round(d, 1) for d in detect],
        "detect_s_median": _stat(detect, statistics.median),
        "detect_s_max": _stat(detect, max),
        "detect_target_s": DETECT_TARGET_S,
        "kill_to_completed_s": [round(r, 1) for r in recovered],
        "kill_to_completed_s_median": _stat(recovered, statistics.median),
        "kill_to_completed_s_max": _stat(recovered, max),
        "kill_to_completed_target_s": round(RECOVERY_TARGET_S + clip_s, 1) if clip_s else None,
        "clip_s": clip_s,
        "flow_s": flow_s,
        "baseline_runs": len(baseline),
        "alive_within_s": ALIVE_WITHIN.total_seconds(),
        "false_crashes": sum(o["crashes"] for o in soak)
        + sum(max(t["crashes"] - 1, 0) for t in trials),
        "soak": len(soak),
        "soak_completed": sum(1 for o in soak if o["status"] == "completed"),
        "soak_crashed_runs": sum(1 for o in soak if o["crashes"]),
        "soak_long_run_s_max": _stat(soak_long, max),
        "soak_flow_s_median": _stat(
            [o["flow_s"] for o in soak if "flow_s" in o], statistics.median
        ),
        "elapsed_s": round(elapsed, 1),
    }


def print_report(r: dict) -> None:
    def verdict(value: float | None, target: float | None) -> str:
        if value is None or target is None:
            return "n/a"
        return "ok" if value <= target else "MISSED"

    detect_target, complete_target = r["detect_target_s"], r["kill_to_completed_target_s"]
    lines = [
        f"Prefect server on {r['database']}; liveness window {r['alive_within_s']:g} s",
        f"clip time, undisturbed (median of {r['baseline_runs']}): {_fmt(r['clip_s'])} s "
        f"request -> completed ({_fmt(r['flow_s'])} s Running)",
        f"lost-host trials {r['trials']}: detected {r['detected']} "
        f"({r['detected_by_liveness']} by the liveness automation), "
        f"completed on the other agent {r['completed_elsewhere']}",
        f"completed once    {r['completed_once']:5d}   (target {r['trials']})",
        f"detect_s          median {_fmt(r['detect_s_median'])}, max {_fmt(r['detect_s_max'])}"
        f"   (target <= {detect_target:g} s: {verdict(r['detect_s_max'], detect_target)})"
        f"   {r['detect_s']}",
        f"kill -> completed median {_fmt(r['kill_to_completed_s_median'])}, "
        f"max {_fmt(r['kill_to_completed_s_max'])}"
        f"   (target <= {RECOVERY_TARGET_S:g} s + clip time = {_fmt(complete_target)} s: "
        f"{verdict(r['kill_to_completed_s_max'], complete_target)})"
        f"   {r['kill_to_completed_s']}",
        f"soak {r['soak']} runs: completed {r['soak_completed']}, median "
        f"{_fmt(r['soak_flow_s_median'])} s Running, long runs up to "
        f"{_fmt(r['soak_long_run_s_max'])} s",
        f"false crashes     {r['false_crashes']:5d}   (target 0)",
        f"lost              {r['lost']:5d}   (target 0)",
        f"duplicated        {r['duplicated']:5d}   (target 0)",
        f"{r['elapsed_s']} s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
