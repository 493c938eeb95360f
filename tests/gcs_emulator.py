"""The real GCS emulator (fake-gcs-server) for tests of one component: one per test module."""

import subprocess
import time
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from emulators import gcs_command
from stack.config import free_port
from stack.processes import port_open

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def gcs_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[storage.Client]:
    """A storage client of a fresh, in-memory fake-gcs-server; it is stopped afterwards."""
    port = free_port()
    log = (tmp_path_factory.mktemp("gcs") / "gcs.log").open("wb")
    server = subprocess.Popen(gcs_command(HOST, port), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_open(HOST, port)():
            assert server.poll() is None and time.monotonic() < deadline, "no GCS emulator"
            time.sleep(0.1)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", f"http://{HOST}:{port}")
            yield storage.Client(project="test", credentials=AnonymousCredentials())
    finally:
        server.terminate()
        server.wait(10)
        log.close()
