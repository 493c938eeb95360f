"""Command-line client of the clipping proxy, for operators and scripts.

    export CLIPPING_PROXY_URL=http://clipping-proxy:8080 CLIPPING_API_KEY=...
    clipctl request /mnt/nas/day1/table-3.mp4 3605.5 3712 --hand-id hand-0042 --wait
    clipctl cancel 3f2a...   # or: clipctl delete 3f2a... (an ended request's clip)
    clipctl agents
    clipctl failover nas-server-01

Answers are printed as JSON (tables for ``agents``); exit status 0 on success, 1 when the
proxy refuses or the clip fails, 2 for usage errors.
"""

import json
import time
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

FINISHED = {"completed", "failed", "rejected", "cancelled", "expired"}

app = typer.Typer(
    help="Request poker-hand clips and manage the NAS agents through the clipping proxy.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

ProxyUrl = Annotated[str, typer.Option(envvar="CLIPPING_PROXY_URL", help="Base URL of the proxy.")]
ApiKey = Annotated[
    str,
    typer.Option(
        envvar="CLIPPING_API_KEY",
        help="Bearer key (scope clip; admin for agents).",
        show_default=False,
    ),
]


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0)


def _call(url: str, key: str, method: str, path: str, **kwargs: Any) -> Any:
    """The answer's JSON; exits with status 1 and the proxy's reason when it refuses."""
    if not key:
        errors.print("no API key: set CLIPPING_API_KEY or pass --key")
        raise typer.Exit(2)
    try:
        with _client(url, key) as proxy:
            answer = proxy.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        errors.print(f"cannot reach the proxy at {url}: {error}")
        raise typer.Exit(1) from None
    if answer.is_error:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text
        errors.print(f"{answer.status_code}: {detail}")
        raise typer.Exit(1)
    return answer.json() if answer.content else None


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data))


@app.command()
def request(
    nas_video_path: Annotated[str, typer.Argument(help="Recording on the NAS.")],
    start_seconds: Annotated[float, typer.Argument(help="Start of the hand (s).")],
    end_seconds: Annotated[float, typer.Argument(help="End of the hand (s).")],
    hand_id: Annotated[str, typer.Option(help="The hand's id.")],
    mode: Annotated[str, typer.Option(help="accurate, copy or reencode.")] = "accurate",
    request_id: Annotated[
        str | None, typer.Option(help="Your id for the request (default: the proxy's).")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="https URL the signed completion is POSTed to.")
    ] = None,
    wait_for_it: Annotated[
        bool, typer.Option("--wait", help="Wait for the clip, with a progress bar.")
    ] = False,
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Ask for a clip; prints the request id and its status URL."""
    body = {
        "hand_id": hand_id,
        "nas_video_path": nas_video_path,
        "start_seconds": start_seconds,
        "end_seconds": end_seconds,
        "mode": mode,
    }
    if request_id:
        body["request_id"] = request_id
    if callback_url:
        body["callback_url"] = callback_url
    accepted = _call(url, key, "POST", "/v1/clip/request", json=body)
    _print_json(accepted)
    if wait_for_it:
        wait(accepted["request_id"], url=url, key=key)


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Print a request's status."""
    _print_json(_call(url, key, "GET", f"/v1/clip/{request_id}/status"))


@app.command()
def cancel(
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Cancel a queued or processing request (exit 1 if it had ended already)."""
    _print_json(_call(url, key, "POST", f"/v1/clip/{request_id}/cancel"))


@app.command()
def delete(
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Delete an ended request's clip, poster and records; its status is then 404."""
    _call(url, key, "DELETE", f"/v1/clip/{request_id}")
    console.print(f"deleted {request_id}")


@app.command()
def wait(
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Follow a request to its end with a progress bar; exit 1 unless it completed."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=errors,
    ) as progress:
        bar = progress.add_task(request_id, total=100.0)
        while True:
            report = _call(url, key, "GET", f"/v1/clip/{request_id}/status")
            progress.update(
                bar,
                description=f"{request_id} {report['status']}",
                completed=100.0 if report["status"] in FINISHED else report.get("progress") or 0,
            )
            if report["status"] in FINISHED or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    _print_json(report)
    if report["status"] != "completed":
        if report["status"] not in FINISHED:
            errors.print(f"still {report['status']} after {timeout:g} s")
        raise typer.Exit(1)


@app.command()
def agents(url: ProxyUrl = "http://127.0.0.1:8080", key: ApiKey = "") -> None:
    """List the NAS agents: status, last heartbeat, runs."""
    table = Table("agent", "status", "last heartbeat", "runs")
    for agent in _call(url, key, "GET", "/v1/admin/agents"):
        runs = ", ".join(run["request_id"] or run["flow_run_id"] for run in agent["runs"])
        table.add_row(agent["agent_id"], agent["status"], agent["last_heartbeat"] or "-", runs)
    console.print(table)


@app.command()
def failover(
    agent_id: Annotated[str, typer.Argument(help="The agent to drain, e.g. nas-server-01.")],
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Drain an agent: no new runs; its runs move to the other agents."""
    _print_json(_call(url, key, "POST", f"/v1/admin/agents/{agent_id}/failover"))


@app.command()
def resume(
    agent_id: Annotated[str, typer.Argument(help="The drained agent.")],
    url: ProxyUrl = "http://127.0.0.1:8080",
    key: ApiKey = "",
) -> None:
    """Let a drained agent take runs again."""
    _print_json(_call(url, key, "POST", f"/v1/admin/agents/{agent_id}/resume"))
