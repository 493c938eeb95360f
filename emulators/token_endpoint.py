"""A stand-in for Google's OAuth2 token endpoint, for service-account keys on loopback.

    python -m emulators.token_endpoint --host 127.0.0.1 --port 8086

The local stack's service-account key names ``http://HOST:PORT/token`` as its
``token_uri``, so the stock Google credentials (and prefect-gcp's ``GcpCredentials``)
run their real token exchange against it, then call the storage emulator with the token.
It answers every JWT-bearer grant with a one-hour token and checks nothing: the storage
emulator checks no token either.
"""

import argparse
import json
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_LIFETIME_S = 3600


class TokenHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/token":
            self.send_error(404)
            return
        body = json.dumps(
            {
                "access_token": f"local-{secrets.token_hex(8)}",
                "expires_in": TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per token request would drown the stack's logs."""


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulators.token_endpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8086)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), TokenHandler)
    print(f"token endpoint on http://{args.host}:{args.port}/token", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
