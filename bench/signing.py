"""Benchmark what signing costs one status call of a completed clip (``proxy.links``).

A status answer's links must stay valid for ``CLIPPING_URL_MIN_VALID``; when the stored
ones would not, the proxy signs the clip and its poster again and caches the pair. This
measures ``ClipLinks.current`` per call, in four cases, each against its limit:

- ``valid``: the stored links are still good (most calls): no signing;
- ``cached``: re-signed once, then served from the cache;
- ``key``: a re-sign with a key file (two local RSA-SHA256 signatures);
- ``keyless``: a re-sign through IAM ``signBlob`` (two calls; here to the loopback
  stand-in ``emulators.google_auth``, so the figure is the client's cost plus a loopback
  round trip; production adds the network's ~20-60 ms per call to Google).

Rounds interleave the cases; figures are medians over the rounds of per-call means. With
--json the last line is one JSON object: ``{case}_ms`` and ``{case}_limit_ms`` per case.

    .venv/bin/python bench/signing.py --rounds 7 --json
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2.service_account import Credentials

from clipping.bucket import SCOPES
from clipping.messages import ClipState, ClipStatusReport
from clipping.signing import KEYLESS_MAX_TTL, IamSigner, UrlSigner
from emulators import google_auth
from proxy.links import ClipLinks
from stack.provision import write_service_account_key

TTL = timedelta(hours=12)
MIN_VALID = timedelta(hours=1)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# Limits per status call: a status answer takes ~5-20 ms (Prefect or GCS read); signing
# may add a fraction of that with a key, and what two IAM calls cost without one.
LIMITS_MS = {"valid": 0.05, "cached": 0.05, "key": 5.0, "keyless": 20.0}


def report(object_name: str, expires_at: datetime) -> ClipStatusReport:
    return ClipStatusReport(
        request_id="r",
        status=ClipState.COMPLETED,
        object_name=object_name,
        download_url="https://stored",
        expires_at=expires_at,
        finished_at=NOW - timedelta(days=3),
    )


def bucket() -> storage.Bucket:
    return storage.Client(project="gg-poker", credentials=AnonymousCredentials()).bucket("clips")


def key_signer(key_file: Path) -> UrlSigner:
    return UrlSigner(bucket(), Credentials.from_service_account_file(key_file), TTL)


def keyless_signer(key_file: Path, endpoint: str) -> UrlSigner:
    info = json.loads(key_file.read_text())
    token_source = Credentials.from_service_account_info(
        {**info, "token_uri": f"{endpoint}/token"}, scopes=SCOPES
    )
    return UrlSigner(
        bucket(), IamSigner(token_source, info["client_email"], endpoint), KEYLESS_MAX_TTL
    )


def per_call_ms(links: ClipLinks, reports: list[ClipStatusReport]) -> float:
    started = time.perf_counter()
    for each in reports:
        links.current(each)
    return (time.perf_counter() - started) / len(reports) * 1000


def cases(key_file: Path, endpoint: str, calls: int) -> dict[str, Callable[[int], float]]:
    """Each case: round number -> mean ms per call of that round."""

    def links(signer: UrlSigner) -> ClipLinks:
        return ClipLinks(lambda: signer, TTL, MIN_VALID, None, clock=lambda: NOW)

    key, keyless = key_signer(key_file), keyless_signer(key_file, endpoint)
    cached = links(key)
    stale = NOW + timedelta(minutes=5)
    cached.current(report("hand/cached.mp4", stale))

    def fresh(signer: UrlSigner, name: str) -> Callable[[int], float]:
        def run(round_: int) -> float:
            unseen = [report(f"hand/{name}-{round_}-{i}.mp4", stale) for i in range(calls)]
            return per_call_ms(links(signer), unseen)

        return run

    return {
        "valid": lambda _: per_call_ms(cached, [report("hand/v.mp4", NOW + TTL)] * calls * 20),
        "cached": lambda _: per_call_ms(cached, [report("hand/cached.mp4", stale)] * calls * 20),
        "key": fresh(key, "key"),
        "keyless": fresh(keyless, "keyless"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (%(default)s)")
    parser.add_argument("--calls", type=int, default=50, help="status calls per case and round")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "sa.json"
        write_service_account_key(key_file, "gg-poker", "http://127.0.0.1:9/token")
        server = google_auth.serve("127.0.0.1", 0, key_file)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            measured = run_rounds(
                cases(key_file, f"http://127.0.0.1:{server.server_address[1]}", args.calls),
                args.rounds,
            )
        finally:
            server.shutdown()
            server.server_close()
    figures: dict[str, float] = {}
    print(f"{'case':<8} {'ms/call':>9} {'limit':>8} {'ratio':>7}")
    for case, values in measured.items():
        median = statistics.median(values)
        figures[f"{case}_ms"], figures[f"{case}_limit_ms"] = round(median, 4), LIMITS_MS[case]
        print(f"{case:<8} {median:>9.4f} {LIMITS_MS[case]:>8.2f} {median / LIMITS_MS[case]:>7.2f}")
    if args.json:
        print(json.dumps(figures))


def run_rounds(runs: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    measured: dict[str, list[float]] = {case: [] for case in runs}
    for round_ in range(rounds):
        for case, run in runs.items():
            measured[case].append(run(round_))
    return measured


if __name__ == "__main__":
    main()
