"""Per-request records of finished steps, kept beside the clips in the bucket.

A retried, rescheduled or re-run ``clip-hand`` run reads them first, so it neither cuts and
uploads a clip that is already stored nor announces a request a second time. They live in
the bucket (``_records/{request_id}/...``) because a rerun may land on another NAS host;
ids cannot start with ``_``, so records never collide with clips.
"""

import time
from datetime import UTC, datetime, timedelta

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud.storage import Bucket
from pydantic import BaseModel

from clipping.messages import ClipCompletion, ClipMode

# Announcing (publish + record) takes under a second; publish retries can stretch it.
CLAIM_TIMEOUT = timedelta(seconds=60)
CLAIM_POLL_S = 1.0


class UploadedClip(BaseModel):
    """A clip that is safely stored under its final object name."""

    object_path: str
    poster_path: str
    size_bytes: int
    duration_seconds: float
    start_seconds: float
    end_seconds: float
    clamped: bool
    mode: ClipMode


class ClipRecords:
    def __init__(self, bucket: Bucket, request_id: str) -> None:
        self._bucket = bucket
        self._prefix = f"_records/{request_id}"

    def uploaded(self) -> UploadedClip | None:
        data = self._read("uploaded.json")
        return None if data is None else UploadedClip.model_validate_json(data)

    def record_upload(self, clip: UploadedClip) -> None:
        self._write("uploaded.json", clip)

    def claim_announcement(self) -> bool:
        """Wait until this attempt may announce the request (True) or another one did (False).

        Two attempts of one run can execute at once (a late second crash report makes the
        rerun automation fire twice). The claim is an object created only if absent, so one
        attempt announces while the other waits for its record. A claim older than
        ``CLAIM_TIMEOUT`` was left by an attempt that died before announcing, and is taken
        over: a late duplicate is possible then, a lost announcement is not.
        """
        claim = self._bucket.blob(f"{self._prefix}/announcing")
        generation = 0
        while True:
            try:
                claim.upload_from_string(b"", if_generation_match=generation)
                return True
            except PreconditionFailed:
                pass
            if self.announced() is not None:
                return False
            claim.reload()
            if datetime.now(UTC) - claim.updated >= CLAIM_TIMEOUT:
                generation = claim.generation
            else:
                time.sleep(CLAIM_POLL_S)

    def announced(self) -> ClipCompletion | None:
        data = self._read("announced.json")
        return None if data is None else ClipCompletion.model_validate_json(data)

    def record_announcement(self, completion: ClipCompletion) -> None:
        self._write("announced.json", completion)

    def _read(self, name: str) -> bytes | None:
        try:
            return self._bucket.blob(f"{self._prefix}/{name}").download_as_bytes()
        except NotFound:
            return None

    def _write(self, name: str, record: BaseModel) -> None:
        self._bucket.blob(f"{self._prefix}/{name}").upload_from_string(
            record.model_dump_json(), content_type="application/json"
        )
