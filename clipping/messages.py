"""Wire messages: what M6 asks for, what the service announces, what the status API answers.

``ClipRequest`` is the body of a ``clipping-requests`` message and the ``clip-hand`` flow's
parameter; ``ClipCompletion`` is the body of a ``clipping-complete`` message;
``ClipStatusReport`` is the answer of ``GET /v1/clip/{request_id}/status``.
"""

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from clipping.nas import confine_to_nas_roots
from clipping.outputs import ClipOutput
from clipping.settings import Settings, get_settings

SAFE_TOKEN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
SafeToken = Annotated[
    str,
    StringConstraints(pattern=SAFE_TOKEN_PATTERN),
    Field(description="1-64 characters: letters, digits, '_' and '-', starting alphanumeric."),
]


def is_safe_token(value: str) -> bool:
    """Whether ``value`` is a well-formed id: safe to log, to name objects and attributes by."""
    return re.fullmatch(SAFE_TOKEN_PATTERN, value) is not None


class ClipMode(StrEnum):
    ACCURATE = "accurate"
    COPY = "copy"
    REENCODE = "reencode"


def settings_of(info: ValidationInfo) -> Settings:
    """The settings a validation runs under: the caller's
    (``model_validate(..., context={"settings": settings})``), else the process's (FastAPI
    and Prefect validate bodies and flow parameters without a context)."""
    given = (info.context or {}).get("settings")
    return given if isinstance(given, Settings) else get_settings()


class ClipRequest(BaseModel):
    """One hand to cut: validated once, here, by every layer that receives it.

    The NAS roots and the longest range come from the settings (``settings_of``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: SafeToken
    hand_id: SafeToken
    nas_video_path: str = Field(
        max_length=4096,
        description="Absolute path of the recording; must resolve inside a NAS root.",
    )
    # Strict: JSON numbers only; lax mode would take "2", true and false as times.
    start_seconds: float = Field(ge=0, allow_inf_nan=False, strict=True)
    end_seconds: float = Field(gt=0, allow_inf_nan=False, strict=True)
    mode: ClipMode = ClipMode.ACCURATE
    output: ClipOutput | None = Field(
        default=None,
        description="'web': H.264/AAC every browser plays (an HEVC recording is re-encoded); "
        "'source': the recording's codec. Unset: CLIPPING_DEFAULT_OUTPUT (web).",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where the proxy POSTs the completion, signed per Standard Webhooks: an "
        "absolute https URL (http only to a loopback host, where the proxy allows loopback).",
    )

    @field_validator("callback_url")
    @classmethod
    def _callback_is_a_web_url(cls, url: str | None) -> str | None:
        if url is not None:
            check_callback_url(url)
        return url

    @model_serializer(mode="wrap")
    def _without_an_unset_callback(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A request without a callback serializes as before callbacks existed, so the bodies
        recorded and the runs' parameters compare equal to a repeat of it across an upgrade."""
        fields: dict[str, Any] = handler(self)
        if fields.get("callback_url", "") is None:
            del fields["callback_url"]
        return fields

    @field_validator("nas_video_path")
    @classmethod
    def _inside_nas_roots(cls, path: str, info: ValidationInfo) -> str:
        settings = settings_of(info)
        confined = confine_to_nas_roots(path, settings.nas_roots)
        if settings.sites and settings.site_of(confined) is None:
            raise ValueError("no NAS site serves this recording (CLIPPING_SITES)")
        return str(confined)

    @model_validator(mode="after")
    def _start_before_end(self, info: ValidationInfo) -> "ClipRequest":
        if not self.start_seconds < self.end_seconds:
            raise ValueError("start_seconds must be less than end_seconds")
        longest = settings_of(info).max_clip_seconds
        if self.end_seconds - self.start_seconds > longest:
            raise ValueError(f"the range is longer than the {longest:g} s maximum")
        return self

    @property
    def object_name(self) -> str:
        """Deterministic per request, so a retried upload overwrites instead of duplicating."""
        return clip_object_of(self.hand_id, self.request_id)

    @property
    def poster_object_name(self) -> str:
        return poster_object_of(self.object_name)


def clip_object_of(hand_id: str, request_id: str) -> str:
    """The clip's object name."""
    return f"{hand_id}/{request_id}.mp4"


def poster_object_of(clip_object: str) -> str:
    """The poster's object name beside its clip's."""
    return str(PurePosixPath(clip_object).with_suffix(".jpg"))


def check_callback_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is an absolute http(s) URL a callback may go to.

    Cheap (no DNS), as every layer validates requests: the proxy checks the addresses the
    host resolves to when it delivers (``proxy.webhooks``).
    """
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute https URL")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("must be https (http only to a loopback host)")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address literal (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_request_id() -> str:
    return uuid.uuid4().hex


class NewClipRequest(ClipRequest):
    """A request as M6 posts it: the proxy assigns ``request_id`` when the caller does not."""

    request_id: SafeToken = Field(default_factory=new_request_id)


class ClipState(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    # Status answers only: the clip was deleted by the retention rule.
    EXPIRED = "expired"


class ClipOutcome(BaseModel):
    """What is known about a clip once it is finished (every field optional)."""

    download_url: str | None = None
    expires_at: datetime | None = None
    poster_url: str | None = Field(
        default=None, description="Signed URL of the first frame (JPEG)."
    )
    object_name: str | None = None
    size_bytes: int | None = None
    duration_seconds: float | None = None
    cut_start_seconds: float | None = None
    cut_end_seconds: float | None = None
    clamped: bool | None = Field(
        default=None,
        description="The requested end was past the recording's end (``reason`` says where "
        "it ends).",
    )
    mode: ClipMode | None = None
    reason: str | None = Field(
        default=None,
        description="Why a request failed or was rejected, or why a completed clip is clamped.",
    )
    agent_id: str | None = None
    flow_run_id: str | None = None


class ClipCompletion(ClipOutcome):
    """Announced on ``clipping-complete`` exactly when a request ends, whichever way."""

    request_id: str | None = Field(description="None only when a rejected message had none.")
    hand_id: str | None = None
    status: Literal[ClipState.COMPLETED, ClipState.FAILED, ClipState.REJECTED, ClipState.CANCELLED]
    finished_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    step_seconds: dict[str, float] | None = Field(
        default=None,
        description="How long the flow's steps took (cut, upload, sign), for the metrics.",
    )


class ClipStatusReport(ClipOutcome):
    """The status API's answer for one request."""

    request_id: str
    status: ClipState
    finished_at: datetime | None = Field(default=None, description="When the request ended.")
    progress: float | None = Field(default=None, description="Percent of the cut done.")
    phase: str | None = Field(
        default=None,
        description="What a processing run is doing, e.g. waiting for a recording still being "
        "written to reach the clip's end.",
    )


def describe_validation_error(error: ValidationError) -> str:
    """One line a caller can read: ``field: problem; field: problem``."""
    return describe_problems(error.errors(include_url=False))


def describe_problems(problems: Sequence[Mapping[str, Any]]) -> str:
    """``describe_validation_error`` for the problem list of a pydantic or FastAPI error."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'message'}: {problem['msg']}"
        for problem in problems
    )
