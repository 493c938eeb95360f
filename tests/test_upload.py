"""Streaming resumable uploads (``flows/upload.py``) against the real GCS emulator.

Interruptions are injected in the client's HTTP session (a chunk's connection drops
before it is sent); everything else is fake-gcs-server answering the resumable protocol.
"""

import os
from pathlib import Path

import pytest
import requests
from google.cloud import storage

from flows.upload import UploadError, upload_file

pytestmark = pytest.mark.integration

CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def bucket(gcs_client: storage.Client) -> storage.Bucket:
    return gcs_client.create_bucket("uploads")


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(9 * 1024 * 1024 + 12_345))  # above the one-request size
    return path


def test_a_file_is_stored_whole_in_several_streamed_chunks(
    bucket: storage.Bucket, clip: Path
) -> None:
    size = upload_file(bucket.blob("a/chunked.mp4"), clip, "video/mp4", 4 * 1024 * 1024)
    assert size == clip.stat().st_size
    blob = bucket.blob("a/chunked.mp4")
    assert blob.download_as_bytes() == clip.read_bytes()
    blob.reload()
    assert blob.content_type == "video/mp4"


def test_a_small_file_goes_in_one_request(bucket: storage.Bucket, tmp_path: Path) -> None:
    poster = tmp_path / "poster.jpg"
    poster.write_bytes(b"\xff\xd8" + os.urandom(50_000))
    assert upload_file(bucket.blob("a/poster.jpg"), poster, "image/jpeg", CHUNK) == 50_002
    assert bucket.blob("a/poster.jpg").download_as_bytes() == poster.read_bytes()


class _DroppingSession(requests.Session):
    """Drops the connection of the ``drop``-th chunk PUT, before anything is sent."""

    def __init__(self, inner: requests.Session, drop: int) -> None:
        super().__init__()
        self._inner, self._drop, self.puts = inner, drop, 0

    def put(self, url: str, data: object = None, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.puts += 1
        if self.puts == self._drop:
            raise requests.ConnectionError("connection reset by peer (injected)")
        return self._inner.put(url, data=data, **kwargs)


def test_an_interrupted_upload_never_leaves_a_partial_object(
    bucket: storage.Bucket, clip: Path
) -> None:
    """After a dropped chunk the client asks the server how far it got and resumes.

    fake-gcs-server answers that status query (``Content-Range: bytes */<total>``) by
    finalizing the object with the bytes it has, where GCS answers 308 with the range
    stored; the size and CRC32C check catches it, deletes that object and fails, so the
    upload task's retry starts a new session. The resume itself is GCS behaviour that
    this emulator cannot show.
    """
    session = _DroppingSession(bucket.client._http, drop=3)
    bucket.client._http_internal = session
    try:
        with pytest.raises(UploadError, match="arrived corrupt"):
            upload_file(bucket.blob("a/resumed.mp4"), clip, "video/mp4", 2 * 1024 * 1024)
    finally:
        bucket.client._http_internal = session._inner
    assert not bucket.blob("a/resumed.mp4").exists()
    size = upload_file(bucket.blob("a/resumed.mp4"), clip, "video/mp4", 2 * 1024 * 1024)
    assert bucket.blob("a/resumed.mp4").download_as_bytes() == clip.read_bytes()
    assert size == clip.stat().st_size


def test_an_upload_that_keeps_failing_raises_and_leaves_no_object(
    bucket: storage.Bucket, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flows.upload.RESUME_BACKOFF_S", (0.0, 0.0, 0.0))

    class _Down(requests.Session):
        def put(self, *args: object, **kwargs: object) -> requests.Response:  # type: ignore[override]
            raise requests.ConnectionError("network down (injected)")

    inner = bucket.client._http
    bucket.client._http_internal = _Down()
    try:
        with pytest.raises(UploadError):
            upload_file(bucket.blob("a/never.mp4"), clip, "video/mp4", 2 * 1024 * 1024)
    finally:
        bucket.client._http_internal = inner
    assert not bucket.blob("a/never.mp4").exists()
