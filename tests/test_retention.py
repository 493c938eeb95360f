"""The retention rule ``python -m deployments`` applies to the clip bucket.

fake-gcs-server keeps no bucket attributes (it answers a lifecycle PATCH and forgets it:
fsouza/fake-gcs-server#1025), so the rule is checked on the wire: the storage client talks
to an in-process stand-in of the two bucket-metadata calls it makes (GET and PATCH
``/storage/v1/b/{bucket}``), which keeps what was patched.
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from clipping.settings import Settings
from deployments.retention import apply_retention, with_retention

pytestmark = pytest.mark.integration

BUCKET = "clips"
OPERATORS_RULE = {
    "action": {"type": "SetStorageClass", "storageClass": "NEARLINE"},
    "condition": {"age": 30},
}


class BucketMetadata:
    def __init__(self) -> None:
        self.resource: dict[str, Any] = {"kind": "storage#bucket", "name": BUCKET, "id": BUCKET}
        self.patches: list[dict[str, Any]] = []

    @property
    def rules(self) -> list[dict[str, Any]]:
        return self.resource.get("lifecycle", {}).get("rule", [])


def handler_for(bucket: BucketMetadata) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_PATCH(self) -> None:
            patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bucket.patches.append(patch)
            bucket.resource.update(patch)
            self._answer()

        def _answer(self) -> None:
            if self.path.split("?")[0] != f"/storage/v1/b/{BUCKET}":
                self.send_error(404)
                return
            body = json.dumps(bucket.resource).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Handler


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[BucketMetadata]:
    metadata = BucketMetadata()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(metadata))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield metadata
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settings(retention_days: int | None) -> Settings:
    return Settings(bucket=BUCKET, gcp_project="test", retention_days=retention_days)


def test_clips_and_posters_are_deleted_after_the_retention_days(bucket: BucketMetadata) -> None:
    apply_retention(settings(30))
    assert bucket.rules == [
        {"action": {"type": "Delete"}, "condition": {"age": 30, "matchesSuffix": [".mp4", ".jpg"]}}
    ]


def test_applying_again_changes_nothing_and_a_new_period_replaces_the_old(
    bucket: BucketMetadata,
) -> None:
    apply_retention(settings(30))
    apply_retention(settings(30))
    assert len(bucket.patches) == 1
    apply_retention(settings(90))
    assert [rule["condition"]["age"] for rule in bucket.rules] == [90]


def test_an_operators_own_rules_are_kept_and_unset_retention_removes_only_ours(
    bucket: BucketMetadata,
) -> None:
    bucket.resource["lifecycle"] = {"rule": [OPERATORS_RULE]}
    apply_retention(settings(7))
    assert bucket.rules[0] == OPERATORS_RULE and len(bucket.rules) == 2
    apply_retention(settings(None))
    assert bucket.rules == [OPERATORS_RULE]


def test_records_are_not_matched_by_the_rule() -> None:
    (rule,) = with_retention([], 7)
    suffixes = tuple(rule["condition"]["matchesSuffix"])
    assert "hand-1/r1.mp4".endswith(suffixes) and "hand-1/r1.jpg".endswith(suffixes)
    for record in (
        "_records/r1/announced.json",
        "_records/r1/uploaded.json",
        "_records/r1/announcing",
    ):
        assert not record.endswith(suffixes)
