"""Failover between the two NAS agents (issue 6), on the live stack with Prefect on PostgreSQL.

A run whose worker and flow process are killed together (a lost host) is marked Crashed by
the liveness automation ("crash runs that stopped beating", ``deployments/automations.py``),
rescheduled, and completed once by the other agent. A healthy run, however long, is never
marked Crashed, not even when its process is slow to exit after reporting Completed; and a
flow process that outlives its killed worker finishes its run without a rerun.

Set ``CLIPPING_TEST_FAILOVER_DATABASES=postgresql,sqlite`` to run the module on both
databases (one stack each, about 3 min per stack).
"""

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from prefect.client.orchestration import get_client
from prefect.states import Running

from clipping.settings import get_settings
from flows.liveness import ALIVE_WITHIN
from stack.lifecycle import Stack
from stack.processes import flow_processes, kill_flow_processes
from stack.provision import ensure_sample_recording
from tests.live_stack import CompletionLog, clip_body, runs_for, task_state, wait_until_finished

pytestmark = pytest.mark.e2e

DATABASES = os.environ.get("CLIPPING_TEST_FAILOVER_DATABASES", "postgresql").split(",")
# Room for a late duplicate (a second announcement, a second object) to show.
DUPLICATE_GRACE_S = 3.0
# Its reencode must outlast 1.5 x ALIVE_WITHIN (30 s) on a quiet machine too: 360 s of
# recording once took only 29.7 s, so 480 s (about 40 s quiet, 50-110 s under load).
LONG_RECORDING_S = 480


@pytest.fixture(scope="module", params=DATABASES)
def stack_database(request: pytest.FixtureRequest) -> str:
    """PostgreSQL, the production shape (and SQLite too when asked)."""
    return request.param


@pytest.fixture(scope="module")
def recording_640(live_stack: Stack) -> Path:
    """Long enough for a reencode to be caught mid-cut (a 36 s reencode takes a few s)."""
    return ensure_sample_recording(
        live_stack.config.nas_root / "recordings" / "table-640.mp4", seconds=40, size="640x360"
    )


@pytest.fixture(scope="module", autouse=True)
def recording_long(live_stack: Stack) -> Iterator[Future[Path]]:
    """Long enough for a reencode running over 1.5 x ALIVE_WITHIN (see LONG_RECORDING_S).

    Made in the background from the module's start (it takes some 10 s), while the
    first test mostly waits.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(
            ensure_sample_recording,
            live_stack.config.nas_root / "recordings" / "table-long.mp4",
            seconds=LONG_RECORDING_S,
            size="640x360",
        )


def _history(prefect_api: httpx.Client, flow_run_id: str) -> list[dict]:
    states = prefect_api.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
    return sorted(states, key=lambda state: state["timestamp"])


def _types(history: list[dict]) -> list[str]:
    return [state["type"] for state in history]


def _wait_for_history(
    prefect_api: httpx.Client,
    flow_run_id: str,
    reached: Callable[[list[str]], bool],
    timeout: float = 90.0,
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not reached(_types(history := _history(prefect_api, flow_run_id))):
        assert time.monotonic() < deadline, f"the run's states stopped at {_types(history)}"
        time.sleep(0.2)
    return history


def _at(state: dict) -> float:
    return datetime.fromisoformat(state["timestamp"].replace("Z", "+00:00")).timestamp()


def _request_clip(proxy: httpx.Client, body: dict) -> str:
    answer = proxy.post("/v1/clip/request", json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()["request_id"]


def _wait_until_cutting(
    proxy: httpx.Client, prefect_api: httpx.Client, request_id: str, timeout: float = 90.0
) -> tuple[str, list[int]]:
    """The run's id and processes, once its ``cut`` task runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_id = proxy.get(f"/v1/clip/{request_id}/status").json().get("flow_run_id")
        if run_id and task_state(prefect_api, run_id, "cut") == "RUNNING":
            pids = flow_processes(run_id)
            if pids:
                return run_id, pids
        time.sleep(0.05)
    raise AssertionError(f"the run of {request_id} never started cutting")


def _reencode_being_cut(
    proxy: httpx.Client,
    prefect_api: httpx.Client,
    admin_proxy: httpx.Client,
    recording: Path,
    hand_id: str,
) -> tuple[str, str, str]:
    """Request a 36 s reencode and wait until it is cutting: request id, run id, agent."""
    body = clip_body(
        recording, hand_id=hand_id, start_seconds=2.0, end_seconds=38.0, mode="reencode"
    )
    request_id = _request_clip(proxy, body)
    run_id, _ = _wait_until_cutting(proxy, prefect_api, request_id)
    return request_id, run_id, _agent_running(admin_proxy, run_id)


def _agent_running(admin_proxy: httpx.Client, flow_run_id: str) -> str:
    """The agent executing the run, as the admin API reports it."""
    agents = admin_proxy.get("/v1/admin/agents")
    assert agents.status_code == 200, agents.text
    (agent,) = [
        agent["agent_id"]
        for agent in agents.json()
        if any(run["flow_run_id"] == flow_run_id for run in agent["runs"])
    ]
    return agent


def _objects(prefix: str) -> list[str]:
    client = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
    return sorted(blob.name for blob in client.list_blobs("gg-subclips", prefix=prefix))


def _assert_completed_once(
    prefect_api: httpx.Client, completions: CompletionLog, request_id: str, hand_id: str
) -> None:
    time.sleep(DUPLICATE_GRACE_S)
    assert completions.count(request_id) == 1, completions.all_for(request_id)
    assert len(runs_for(prefect_api, request_id)) == 1
    assert _objects(f"{hand_id}/") == [f"{hand_id}/{request_id}.jpg", f"{hand_id}/{request_id}.mp4"]


@contextmanager
def _restarted_afterwards(live_stack: Stack, worker: str) -> Iterator[None]:
    """Whatever happens inside, the worker runs again afterwards (for the next tests)."""
    try:
        yield
    finally:
        if worker not in live_stack.supervisor.running():
            # Forget the dead worker's pid file, killing what is left of its process group.
            live_stack.stop(worker, kill=True)
            live_stack.start(worker)


def test_a_lost_host_is_detected_by_its_silence_and_the_clip_completes_once_elsewhere(
    live_stack: Stack,
    proxy: httpx.Client,
    admin_proxy: httpx.Client,
    prefect_api: httpx.Client,
    completions: CompletionLog,
    recording_640: Path,
) -> None:
    request_id, run_id, agent = _reencode_being_cut(
        proxy, prefect_api, admin_proxy, recording_640, "hand-lost-host"
    )
    (survivor,) = set(live_stack.config.workers) - {agent}
    worker_pid = live_stack.supervisor.running()[agent]

    with _restarted_afterwards(live_stack, agent):
        # The worker first, so it cannot see its flow process die and report the crash itself.
        killed_at = time.time()
        os.kill(worker_pid, signal.SIGKILL)
        killed = kill_flow_processes(run_id)
        assert killed, "the flow process was gone before the kill"
        assert _objects(f"hand-lost-host/{request_id}") == [], "the clip was done before the kill"

        # Once the survivor has taken the rerun, the lost host comes back: it changes nothing.
        rerun = _wait_for_history(prefect_api, run_id, lambda types: types.count("RUNNING") >= 2)
        live_stack.stop(agent, kill=True)
        live_stack.start(agent)

        status = wait_until_finished(proxy, request_id)
        completed_at = time.time()
        assert status["status"] == "completed", status
        assert status["agent_id"] == survivor
        _assert_completed_once(prefect_api, completions, request_id, "hand-lost-host")

    crashed = [state for state in rerun if state["type"] == "CRASHED"]
    assert len(crashed) == 1, _types(rerun)
    assert "no liveness beat" in crashed[0]["message"]
    detected_s = _at(crashed[0]) - killed_at
    print(
        f"\nlost host: crashed {detected_s:.1f} s after the kill, "
        f"completed on {survivor} {completed_at - killed_at:.1f} s after the kill"
    )
    history = _history(prefect_api, run_id)
    assert _types(history).count("CRASHED") == 1, _types(history)
    after_crash = history[history.index(crashed[0]) + 1]
    assert after_crash["name"] == "AwaitingRetry", after_crash  # the crash automation
    assert _types(history).count("RUNNING") == 2  # the killed attempt and the rerun
    assert _types(history)[-1] == "COMPLETED"


def test_a_run_lost_before_its_first_beat_is_crashed_too(prefect_api: httpx.Client) -> None:
    """A run whose host died between its Running state and its first beat reaching the
    server: here a run set Running with no process at all (in a queue no worker polls, so
    its rerun waits there)."""
    with get_client(sync_client=True) as prefect:
        deployment = prefect.read_deployment_by_name(get_settings().deployment)
        run = prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "request": {
                    "request_id": "never-beat",
                    "hand_id": "h",
                    "nas_video_path": "/never/read.mp4",
                    "start_seconds": 0.0,
                    "end_seconds": 1.0,
                }
            },
            idempotency_key="never-beat",
            work_queue_name="no-worker-polls-this",
            state=Running(),
        )
    history = _wait_for_history(prefect_api, str(run.id), lambda types: "CRASHED" in types)
    (crashed,) = [state for state in history if state["type"] == "CRASHED"]
    assert "no liveness beat" in crashed["message"]


def test_a_long_healthy_run_is_never_crashed_even_if_its_process_exits_slowly(
    live_stack: Stack,
    proxy: httpx.Client,
    prefect_api: httpx.Client,
    completions: CompletionLog,
    recording_long: Future[Path],
) -> None:
    body = clip_body(
        recording_long.result(timeout=120), hand_id="hand-long", start_seconds=1.0,
        end_seconds=LONG_RECORDING_S - 1.0, mode="reencode",
    )  # fmt: skip
    request_id = _request_clip(proxy, body)
    run_id, pids = _wait_until_cutting(proxy, prefect_api, request_id)

    # Catch the Completed state as it lands, then freeze the process before it exits: a
    # slow teardown sends nothing more, and must not turn the finished run into a crash.
    deadline = time.monotonic() + 180
    while prefect_api.get(f"/flow_runs/{run_id}").json()["state_type"] != "COMPLETED":
        assert time.monotonic() < deadline, "the long run did not complete"
        time.sleep(0.05)
    stopped = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        except ProcessLookupError:
            continue
    try:
        assert stopped, "the flow process exited before it could be frozen"
        time.sleep(ALIVE_WITHIN.total_seconds() + 10)
        history = _history(prefect_api, run_id)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                continue

    assert "CRASHED" not in _types(history), _types(history)
    assert _types(history)[-1] == "COMPLETED"
    assert _types(history).count("RUNNING") == 1
    (running,) = [state for state in history if state["type"] == "RUNNING"]
    ran_s = _at(history[-1]) - _at(running)
    print(f"\nlong run: {ran_s:.1f} s Running, frozen for {ALIVE_WITHIN.total_seconds() + 10:g} s")
    # Longer than the liveness window by half again (see LONG_RECORDING_S): beats, not
    # luck, kept it alive. A machine much faster than this one needs a longer recording.
    assert ran_s > 1.5 * ALIVE_WITHIN.total_seconds(), "make LONG_RECORDING_S longer"
    assert wait_until_finished(proxy, request_id)["status"] == "completed"
    _assert_completed_once(prefect_api, completions, request_id, "hand-long")


def test_a_flow_process_outliving_its_killed_worker_completes_its_run_once(
    live_stack: Stack,
    proxy: httpx.Client,
    admin_proxy: httpx.Client,
    prefect_api: httpx.Client,
    completions: CompletionLog,
    recording_640: Path,
) -> None:
    request_id, run_id, agent = _reencode_being_cut(
        proxy, prefect_api, admin_proxy, recording_640, "hand-orphan"
    )

    worker_pid = live_stack.supervisor.running()[agent]

    with _restarted_afterwards(live_stack, agent):
        # The worker process alone: its flow runs share its process group.
        os.kill(worker_pid, signal.SIGKILL)
        status = wait_until_finished(proxy, request_id)
        assert status["status"] == "completed", status
        assert status["agent_id"] == agent
        _assert_completed_once(prefect_api, completions, request_id, "hand-orphan")
        deadline = time.monotonic() + 30
        while flow_processes(run_id):
            assert time.monotonic() < deadline, "the orphaned flow process did not exit"
            time.sleep(0.2)

    history = _history(prefect_api, run_id)
    assert "CRASHED" not in _types(history), _types(history)
    assert _types(history).count("RUNNING") == 1, _types(history)
