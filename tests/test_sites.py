"""NAS sites in process: parsing, which site serves a path, requests no site serves, and
the listener creating each run in its site's work queue (``clipping.sites``)."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent_pool.listener import RequestListener
from clipping.messages import ClipRequest
from clipping.outcomes import RequestOutcomes
from clipping.settings import Settings
from clipping.sites import parse_sites, site_serving
from tests.doubles import MemoryBucket
from tests.test_listener import DEPLOYMENT_ID, FakeMessage, FakePrefect

pytestmark = pytest.mark.unit


@pytest.fixture
def site_settings(nas_root: Path) -> Settings:
    for site in ("vegas", "macau", "macau/annex"):
        (nas_root / site).mkdir(parents=True)
    return Settings(
        nas_roots=(nas_root,),
        sites=";".join(
            f"{name}={nas_root / root}"
            for name, root in (("vegas", "vegas"), ("macau", "macau"), ("annex", "macau/annex"))
        ),
    )


def request_for(path: Path, settings: Settings) -> ClipRequest:
    body = {
        "request_id": "r1",
        "hand_id": "h1",
        "nas_video_path": str(path),
        "start_seconds": 1.0,
        "end_seconds": 2.0,
    }
    return ClipRequest.model_validate(body, context={"settings": settings})


def test_sites_parse_with_their_roots_and_queues() -> None:
    vegas, macau = parse_sites("vegas=/mnt/a ; macau=/mnt/b:/mnt/c;")
    assert (vegas.name, vegas.roots, vegas.work_queue) == ("vegas", (Path("/mnt/a"),), "site-vegas")
    assert macau.roots == (Path("/mnt/b"), Path("/mnt/c"))


@pytest.mark.parametrize("text", ["vegas", "Vegas=/mnt/a", "las vegas=/mnt/a", "=/mnt/a"])
def test_a_malformed_site_is_refused_with_its_entry(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sites(text)


def test_the_most_specific_root_wins(site_settings: Settings, nas_root: Path) -> None:
    sites = site_settings.sites
    assert site_serving(nas_root / "vegas" / "day1.mp4", sites).name == "vegas"  # type: ignore[union-attr]
    assert site_serving(nas_root / "macau" / "t.mp4", sites).name == "macau"  # type: ignore[union-attr]
    assert site_serving(nas_root / "macau/annex/t.mp4", sites).name == "annex"  # type: ignore[union-attr]
    assert site_serving(nas_root / "vegasx" / "t.mp4", sites) is None


def test_a_site_root_outside_the_nas_roots_is_refused(nas_root: Path) -> None:
    with pytest.raises(ValidationError, match="site roots outside every NAS root"):
        Settings(nas_roots=(nas_root,), sites="vegas=/elsewhere")


def test_a_recording_no_site_serves_is_refused_with_the_reason(
    site_settings: Settings, nas_root: Path
) -> None:
    assert request_for(nas_root / "vegas" / "day1.mp4", site_settings).nas_video_path.endswith(
        "day1.mp4"
    )
    with pytest.raises(ValidationError, match="no NAS site serves this recording"):
        request_for(nas_root / "day1.mp4", site_settings)


def test_the_listener_creates_each_run_in_its_sites_queue(
    site_settings: Settings, nas_root: Path
) -> None:
    prefect = FakePrefect()
    outcomes = RequestOutcomes(MemoryBucket(), lambda completion: "m")  # type: ignore[arg-type]
    listener = RequestListener(
        site_settings, prefect, DEPLOYMENT_ID, outcomes, park=lambda *a, **k: "p"
    )  # type: ignore[arg-type]
    for request_id, site in (("r-vegas", "vegas"), ("r-annex", "macau/annex")):
        body = request_for(nas_root / site / "t.mp4", site_settings).model_copy(
            update={"request_id": request_id}
        )
        message = FakeMessage(body.model_dump_json().encode(), 1)
        listener.handle(message)
        assert message.answers == ["ack"]
    assert prefect.runs["r-vegas"].work_queue_name == "site-vegas"
    assert prefect.runs["r-annex"].work_queue_name == "site-annex"


def test_without_sites_runs_go_to_the_deployments_queue(settings: Settings, nas_root: Path) -> None:
    prefect = FakePrefect()
    outcomes = RequestOutcomes(MemoryBucket(), lambda completion: "m")  # type: ignore[arg-type]
    listener = RequestListener(settings, prefect, DEPLOYMENT_ID, outcomes, park=lambda *a, **k: "p")  # type: ignore[arg-type]
    listener.handle(
        FakeMessage(request_for(nas_root / "day1.mp4", settings).model_dump_json().encode(), 1)
    )
    assert prefect.runs["r1"].work_queue_name is None
