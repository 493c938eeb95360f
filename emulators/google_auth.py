"""A stand-in for Google's identity endpoints on loopback: tokens, metadata and signBlob.

    python -m emulators.google_auth --host 127.0.0.1 --port 8086 --key-file sa.json

It serves, from one port:

- ``POST /token``: the OAuth2 token endpoint the local service-account key names as its
  ``token_uri``, so the stock Google credentials run their real token exchange;
- ``/computeMetadata/v1/...``: the parts of the GCE metadata server that Application
  Default Credentials use (the ping, the default service account, its token, the project),
  so with ``GCE_METADATA_HOST``/``GCE_METADATA_IP`` pointed here a process runs as that
  account with no key, as on Cloud Run or with workload identity;
- ``POST /v1/projects/-/serviceAccounts/{email}:signBlob``: the IAM Credentials API, which
  signs with the key file's private key (Google's own, rotated key in production). It
  requires a bearer token and refuses another account than the key's.

Tokens are random and checked for presence only: the storage emulator checks none either.
"""

import argparse
import base64
import json
import re
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

TOKEN_LIFETIME_S = 3600
METADATA_ACCOUNT = re.compile(r"^/computeMetadata/v1/instance/service-accounts/([^/]+)/(.*)$")
SIGN_BLOB = re.compile(r"^/v1/projects/-/serviceAccounts/([^/:]+):signBlob$")


class ServiceAccount:
    """The account the stand-in issues tokens for and signs as."""

    def __init__(self, key_file: Path) -> None:
        info = json.loads(key_file.read_text())
        self.email: str = info["client_email"]
        self.project: str = info["project_id"]
        self.key_id: str = info["private_key_id"]
        key = load_pem_private_key(info["private_key"].encode(), password=None)
        assert isinstance(key, RSAPrivateKey)
        self._key = key

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


class GoogleAuthHandler(BaseHTTPRequestHandler):
    account: ServiceAccount

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urlsplit(self.path).path
        if path == "/token":
            self._json(200, _token())
        elif match := SIGN_BLOB.match(path):
            self._sign_blob(unquote(match.group(1)), body)
        else:
            self._json(404, {"error": {"code": 404, "message": f"no {path}"}})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self.headers.get("Metadata-Flavor") != "Google":
            self._json(403, {"error": "Missing Metadata-Flavor:Google header"})
        elif path in ("", "/"):
            self._text("computeMetadata/\n")  # the ping ADC sends to detect GCE
        elif path == "/computeMetadata/v1/project/project-id":
            self._text(self.account.project)
        elif match := METADATA_ACCOUNT.match(path):
            self._metadata_account(unquote(match.group(1)), match.group(2))
        else:
            self._json(404, {"error": f"no metadata at {path}"})

    def _metadata_account(self, name: str, item: str) -> None:
        if name not in ("default", self.account.email):
            self._json(404, {"error": f"no service account {name}"})
        elif item == "":
            info = {"email": self.account.email, "aliases": ["default"], "scopes": []}
            self._json(200, info)
        elif item == "email":
            self._text(self.account.email)
        elif item == "token":
            self._json(200, _token())
        else:
            self._json(404, {"error": f"no metadata {item}"})

    def _sign_blob(self, email: str, body: bytes) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._json(401, {"error": {"code": 401, "message": "no bearer token"}})
        elif email != self.account.email:
            self._json(403, {"error": {"code": 403, "message": f"no signBlob on {email}"}})
        else:
            payload = base64.b64decode(json.loads(body)["payload"])
            signed = base64.b64encode(self.account.sign(payload)).decode()
            self._json(200, {"keyId": self.account.key_id, "signedBlob": signed})

    def _json(self, status: int, document: dict[str, Any]) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _text(self, text: str) -> None:
        self._send(200, text.encode(), "application/text")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per token request would drown the stack's logs."""


def _token() -> dict[str, Any]:
    return {
        "access_token": f"local-{secrets.token_hex(8)}",
        "expires_in": TOKEN_LIFETIME_S,
        "token_type": "Bearer",
    }


def serve(host: str, port: int, key_file: Path) -> ThreadingHTTPServer:
    """The stand-in, bound (call ``serve_forever`` on it)."""
    handler = type("Handler", (GoogleAuthHandler,), {"account": ServiceAccount(key_file)})
    return ThreadingHTTPServer((host, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulators.google_auth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8086)
    parser.add_argument(
        "--key-file", type=Path, required=True, help="service-account key whose key signs blobs"
    )
    args = parser.parse_args()
    server = serve(args.host, args.port, args.key_file)
    print(f"google auth stand-in on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
