"""Streaming resumable uploads: each chunk is one request whose body is read from disk as sent.

``Blob.upload_from_filename`` reads every resumable chunk into memory, so its chunk size
trades memory for round trips (and the GCS emulator, which appends chunk by chunk, slows
down quadratically with their number: 8 MiB chunks take ~8 s for a 225 MB clip, one
request ~1.5 s). Here a chunk is a streamed request body, so memory stays at the
transport's read buffer whatever the chunk or file size, and a large chunk
(``CLIPPING_UPLOAD_CHUNK_BYTES``) costs only the bytes resent after an interruption.

The protocol is GCS's resumable upload
(https://cloud.google.com/storage/docs/performing-resumable-uploads): a session is
created, chunks are PUT with ``Content-Range``, a failed chunk resumes from the offset
the server reports, and the object exists only once the last byte is in, so an
interrupted upload leaves nothing behind. The object's CRC32C, computed while sending,
must match the server's.
"""

import base64
import time
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c
import requests
from google.cloud.storage import Blob

# Files up to this size go in one multipart request (the library holds them in memory).
SMALL_FILE_BYTES = 8 * 1024 * 1024
RESUME_ATTEMPTS = 3
RESUME_BACKOFF_S = (1.0, 2.0, 4.0)
TIMEOUT_S = (10.0, 120.0)  # connect, read
RETRYABLE = {408, 429, 500, 502, 503, 504}


class UploadError(RuntimeError):
    pass


def upload_file(blob: Blob, path: Path, content_type: str, chunk_bytes: int) -> int:
    """Upload ``path`` as ``blob``; return the stored size. Memory does not grow with it."""
    total = path.stat().st_size
    if total <= min(SMALL_FILE_BYTES, chunk_bytes):
        blob.upload_from_filename(str(path), content_type=content_type)
        return total
    blob.content_type = content_type  # the session's object metadata
    session_url = blob.create_resumable_upload_session(
        content_type=content_type, size=total, checksum=None
    )
    transport = blob.bucket.client._http
    with path.open("rb") as file:
        sender = _Sender(file)
        resource = _send(transport, session_url, sender, total, chunk_bytes)
    stored = int(resource.get("size", total))
    expected = base64.b64encode(sender.crc.digest()).decode()
    if stored != total or resource.get("crc32c", expected) != expected:
        # Only this upload's generation: a concurrent attempt's good object is kept.
        blob.delete(if_generation_match=int(resource["generation"]))
        raise UploadError(
            f"gs://{blob.bucket.name}/{blob.name} arrived corrupt "
            f"({stored} of {total} bytes, crc32c {resource.get('crc32c')} != {expected}); deleted"
        )
    return stored


def _send(
    transport: requests.Session, session_url: str, sender: "_Sender", total: int, chunk_bytes: int
) -> dict[str, Any]:
    offset, failures = 0, 0
    while True:
        end = min(offset + chunk_bytes, total)
        try:
            response = transport.put(
                session_url,
                data=sender.chunk(offset, end),
                headers={"Content-Range": f"bytes {offset}-{end - 1}/{total}"},
                timeout=TIMEOUT_S,
            )
        except requests.RequestException as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code in (200, 201):
                return response.json()
            if response.status_code == 308:
                persisted = _next_offset(response)
                if persisted > offset:
                    offset = persisted
                    continue
                problem = f"no bytes stored past {offset}"
            else:
                problem = f"{response.status_code} {response.text[:200]}"
                if response.status_code not in RETRYABLE:
                    raise UploadError(f"resumable upload refused: {problem}")
        if failures >= RESUME_ATTEMPTS:
            raise UploadError(f"resumable upload failed {failures + 1} times: {problem}")
        time.sleep(RESUME_BACKOFF_S[failures])
        failures += 1
        try:
            status = _query(transport, session_url, total)
        except requests.RequestException:
            continue  # still unreachable: resend from the last offset known
        if isinstance(status, dict):
            return status
        offset = status


def _query(transport: requests.Session, session_url: str, total: int) -> int | dict[str, Any]:
    """The offset to resume from, or the object's resource when the upload is complete."""
    response = transport.put(
        session_url, headers={"Content-Range": f"bytes */{total}"}, timeout=TIMEOUT_S
    )
    if response.status_code in (200, 201):
        return response.json()
    if response.status_code == 308:
        return _next_offset(response)
    raise UploadError(f"resumable upload session lost: {response.status_code}")


def _next_offset(response: requests.Response) -> int:
    persisted = response.headers.get("Range")  # "bytes=0-N": N is the last byte stored
    return int(persisted.rsplit("-", 1)[1]) + 1 if persisted else 0


class _Sender:
    """Reads chunks of the file for request bodies, and its CRC32C as bytes first go out."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.crc = google_crc32c.Checksum()
        self._crc_upto = 0

    def chunk(self, start: int, end: int) -> "_Chunk":
        self._file.seek(start)
        return _Chunk(self, start, end)

    def read(self, position: int, size: int) -> bytes:
        if position > self._crc_upto:
            raise UploadError(f"the server skipped bytes {self._crc_upto} to {position}")
        data = self._file.read(size)
        fresh = position + len(data) - self._crc_upto
        if fresh > 0:  # bytes resent after a resume are in the checksum already
            self.crc.update(data[len(data) - fresh :])
            self._crc_upto += fresh
        return data


class _Chunk:
    """A byte range of the file as a streamed request body (its length sets Content-Length)."""

    def __init__(self, sender: _Sender, start: int, end: int) -> None:
        self._sender, self._position, self._end = sender, start, end
        self._length = end - start

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._position
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        data = self._sender.read(self._position, size)
        self._position += len(data)
        return data
