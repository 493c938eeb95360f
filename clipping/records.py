"""The per-request record of a stored clip, kept beside the clips in the bucket.

A retried, rescheduled or re-run ``clip-hand`` run reads it first, so it does not cut and
upload a clip that is already stored. It lives in the bucket (``_records/{request_id}/``)
because a rerun may land on another NAS host; ids cannot start with ``_``, so records never
collide with clips. The request's outcome is kept in the same folder by
``clipping.outcomes``, its one owner.
"""

import contextlib
from collections.abc import Iterable

from google.api_core.exceptions import NotFound
from google.cloud.storage import Bucket
from pydantic import BaseModel

from clipping.messages import ClipMode

RECORDS_PREFIX = "_records"


def records_prefix(request_id: str) -> str:
    return f"{RECORDS_PREFIX}/{request_id}"


def discard_objects(bucket: Bucket, object_names: Iterable[str]) -> list[str]:
    """Delete the named objects (a clip, its poster); the names that were there."""
    deleted = []
    for name in object_names:
        with contextlib.suppress(NotFound):
            bucket.blob(name).delete()
            deleted.append(name)
    return deleted


def erase_records(bucket: Bucket, request_id: str) -> list[str]:
    """Delete every record of the request (its upload record and its outcome)."""
    names = [blob.name for blob in bucket.list_blobs(prefix=f"{records_prefix(request_id)}/")]
    return discard_objects(bucket, names)


class UploadedClip(BaseModel):
    """A clip that is safely stored under its final object name."""

    object_path: str
    poster_path: str
    size_bytes: int
    duration_seconds: float
    start_seconds: float
    end_seconds: float
    clamped: bool
    clamp_reason: str | None = None
    mode: ClipMode


class UploadRecord:
    def __init__(self, bucket: Bucket, request_id: str) -> None:
        self._blob = bucket.blob(f"{records_prefix(request_id)}/uploaded.json")

    def read(self) -> UploadedClip | None:
        try:
            return UploadedClip.model_validate_json(self._blob.download_as_bytes())
        except NotFound:
            return None

    def write(self, clip: UploadedClip) -> None:
        self._blob.upload_from_string(clip.model_dump_json(), content_type="application/json")
