"""The one request model: every rule a clip request must satisfy, and readable refusals."""

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from clipping.messages import (
    ClipMode,
    ClipRequest,
    NewClipRequest,
    describe_validation_error,
)
from clipping.settings import Settings

pytestmark = pytest.mark.unit


def _request(nas_root: Path, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "request_id": "req-001",
        "hand_id": "hand_42",
        "nas_video_path": str(nas_root / "day1.mp4"),
        "start_seconds": 10.0,
        "end_seconds": 20.5,
    }
    body.update(changes)
    return body


def _refusal(body: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as caught:
        ClipRequest.model_validate(body)
    return describe_validation_error(caught.value)


def test_a_valid_request_keeps_its_fields_and_names_its_object(nas_root: Path) -> None:
    request = ClipRequest.model_validate(_request(nas_root, mode="copy"))
    assert request.nas_video_path == str(nas_root / "day1.mp4")
    assert (request.start_seconds, request.end_seconds) == (10.0, 20.5)
    assert request.mode is ClipMode.COPY
    assert request.object_name == "hand_42/req-001.mp4"


def test_round_trips_through_json_unchanged(nas_root: Path) -> None:
    request = ClipRequest.model_validate(_request(nas_root))
    assert ClipRequest.model_validate_json(request.model_dump_json()) == request


@pytest.mark.parametrize(
    "bad_id", ["", "../etc", "a/b", "a b", "-leading-dash", "x" * 65, "ünicode", "a.mp4"]
)
def test_ids_must_be_short_safe_tokens(nas_root: Path, bad_id: str) -> None:
    assert "request_id" in _refusal(_request(nas_root, request_id=bad_id))
    assert "hand_id" in _refusal(_request(nas_root, hand_id=bad_id))


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [
        (float("nan"), 20.0, "finite"),
        (10.0, float("inf"), "finite"),
        (-1.0, 20.0, "greater than or equal to 0"),
        (20.0, 20.0, "start_seconds must be less than end_seconds"),
        (30.0, 20.0, "start_seconds must be less than end_seconds"),
        ("ten", 20.0, "valid number"),
        (0.0, 1800.5, "longer than the 1800 s maximum"),
    ],
)
def test_times_are_finite_and_ordered(
    nas_root: Path, start: object, end: object, problem: str
) -> None:
    assert problem in _refusal(_request(nas_root, start_seconds=start, end_seconds=end))


@pytest.mark.parametrize("field", ["start_seconds", "end_seconds"])
@pytest.mark.parametrize("lax", ["2", "25.5", True, False, None])
def test_times_are_json_numbers_only(nas_root: Path, field: str, lax: object) -> None:
    reason = _refusal(_request(nas_root, **{field: lax}))
    assert f"{field}: Input should be a valid number" in reason


@pytest.mark.parametrize(("start", "end"), [(1, 2), (0, 2.5), (1.5, 30)])
def test_times_may_be_integers_or_floats(nas_root: Path, start: float, end: float) -> None:
    request = ClipRequest.model_validate_json(
        json.dumps(_request(nas_root, start_seconds=start, end_seconds=end))
    )
    assert (request.start_seconds, request.end_seconds) == (start, end)
    assert isinstance(request.start_seconds, float)


def test_a_thirty_minute_range_is_allowed(nas_root: Path) -> None:
    ClipRequest.model_validate(_request(nas_root, start_seconds=0.0, end_seconds=1800.0))


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "relative/day1.mp4", "{root}/../escape.mp4", "{root}-sibling/day1.mp4"],
)
def test_paths_outside_the_nas_roots_are_refused(nas_root: Path, path: str) -> None:
    reason = _refusal(_request(nas_root, nas_video_path=path.format(root=nas_root)))
    assert reason.startswith("nas_video_path:")


def test_a_symlink_leading_out_of_the_root_is_refused(nas_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not for you")
    (nas_root / "innocent.mp4").symlink_to(outside)
    reason = _refusal(_request(nas_root, nas_video_path=str(nas_root / "innocent.mp4")))
    assert "outside the configured NAS roots" in reason


def test_a_symlink_inside_the_root_resolves_to_its_target(nas_root: Path) -> None:
    (nas_root / "archive").mkdir()
    target = nas_root / "archive" / "day1.mp4"
    target.touch()
    (nas_root / "latest.mp4").symlink_to(target)
    request = ClipRequest.model_validate(
        _request(nas_root, nas_video_path=str(nas_root / "latest.mp4"))
    )
    assert request.nas_video_path == str(target)


def test_a_nul_byte_is_refused(nas_root: Path) -> None:
    assert "NUL" in _refusal(_request(nas_root, nas_video_path=f"{nas_root}/a\x00.mp4"))


def test_every_root_is_honoured(nas_root: Path, tmp_path: Path, monkeypatch) -> None:
    second = tmp_path / "nas2"
    second.mkdir()
    monkeypatch.setenv("CLIPPING_NAS_ROOTS", f"{nas_root}{os.pathsep}{second}")
    from clipping.settings import get_settings

    get_settings.cache_clear()
    ClipRequest.model_validate(_request(nas_root, nas_video_path=str(second / "day2.mp4")))


def test_unknown_fields_and_missing_fields_are_named(nas_root: Path) -> None:
    body = _request(nas_root, surprise=1)
    del body["hand_id"]
    reason = _refusal(body)
    assert "hand_id: Field required" in reason
    assert "surprise: Extra inputs are not permitted" in reason


def test_unknown_mode_is_refused(nas_root: Path) -> None:
    assert "mode:" in _refusal(_request(nas_root, mode="fast"))


def test_json_that_is_not_json_gets_a_readable_reason(nas_root: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        ClipRequest.model_validate_json(b"{not json")
    assert "Invalid JSON" in describe_validation_error(caught.value)


def test_new_requests_get_an_id_unless_the_caller_gives_one(nas_root: Path) -> None:
    body = _request(nas_root)
    del body["request_id"]
    first, second = NewClipRequest.model_validate(body), NewClipRequest.model_validate(body)
    assert first.request_id != second.request_id
    assert ClipRequest.model_validate(first.model_dump()).request_id == first.request_id
    given = NewClipRequest.model_validate(_request(nas_root))
    assert given.request_id == "req-001"


def test_the_callers_settings_decide_the_roots_and_the_longest_range(
    nas_root: Path, tmp_path: Path
) -> None:
    """``context={"settings": ...}`` instead of the process's settings (the listener's way)."""
    other_root = tmp_path / "other-nas"
    other_root.mkdir()
    strict = Settings(nas_roots=(other_root,), max_clip_seconds=5)
    body = _request(other_root, start_seconds=0.0, end_seconds=4.0)
    assert ClipRequest.model_validate(body, context={"settings": strict}).end_seconds == 4.0
    with pytest.raises(ValidationError, match="longer than the 5 s maximum"):
        ClipRequest.model_validate({**body, "end_seconds": 6.0}, context={"settings": strict})
    with pytest.raises(ValidationError, match="outside the configured NAS roots"):
        ClipRequest.model_validate(_request(nas_root), context={"settings": strict})
