"""What the stack creates once its servers run: key, topics, subscriptions, bucket, recording."""

import contextlib
import json
import logging
import subprocess
from pathlib import Path

import imageio_ffmpeg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core.exceptions import Conflict
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from clipping.settings import Settings
from proxy.auth import digest, new_key

logger = logging.getLogger("clipping.stack")

# A subscription of the stack's own on clipping-complete, so the demo (and anyone
# exploring) can read the completion messages; the service itself never reads them.
COMPLETIONS_AUDIT_SUBSCRIPTION = "clipping-complete-audit"


def write_service_account_key(path: Path, project: str, token_uri: str) -> None:
    """A service-account key file with a fresh RSA key: it signs the local URLs.

    ``token_uri`` is the stack's token endpoint (``emulators.google_auth``), which
    also signs blobs with this key for keyless signing.
    """
    if path.exists():
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local-stack",
        "private_key": pem,
        "client_email": f"clipping-local@{project}.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": token_uri,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # private before the key is in it
    path.write_text(json.dumps(info, indent=2))


# The stack's API clients and the scopes of their keys.
CLIENT_SCOPES = {"m6": "clip", "admin": "admin", "operator": "admin+clip"}


def write_api_keys(digests_file: Path, client_keys_file: Path, clipctl_env: Path, url: str) -> None:
    """Fresh keys per stack: digests for the proxy, the keys themselves for the clients,
    and ``clipctl``'s environment with the operator's key."""
    if client_keys_file.exists():
        return
    keys = {client: new_key() for client in CLIENT_SCOPES}
    lines = [f"{CLIENT_SCOPES[client]} {digest(key)}  # {client}" for client, key in keys.items()]
    digests_file.write_text("\n".join(lines) + "\n")
    for path, text in [
        (client_keys_file, json.dumps(keys, indent=2)),
        (clipctl_env, f"CLIPPING_PROXY_URL={url}\nCLIPPING_API_KEY={keys['operator']}\n"),
    ]:
        path.touch(mode=0o600)
        path.write_text(text)


def create_bucket(settings: Settings) -> None:
    client = storage.Client(project=settings.gcp_project, credentials=AnonymousCredentials())
    with contextlib.suppress(Conflict):
        client.create_bucket(settings.bucket)


def ensure_sample_recording(path: Path, seconds: int, size: str = "1280x720") -> Path:
    """A synthetic table recording (H.264 30 fps with a 2 s GOP and B-frames, AAC)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating a %d s %s sample recording at %s", seconds, size, path)
    partial = path.with_suffix(".partial" + path.suffix)
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-bf", "2",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
            "-movflags", "+faststart", "-y", str(partial),
        ],
        check=True,
    )  # fmt: skip
    partial.rename(path)
    return path
