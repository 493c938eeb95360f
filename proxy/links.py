"""A completed clip's links as the status API hands them out: never about to go stale.

The completion message keeps the URLs signed at completion. The status API answers URLs
valid for at least ``CLIPPING_URL_MIN_VALID`` from the moment of the answer: the stored
ones while they are, else URLs signed again (``clipping.signing``), kept in memory and
handed out until they too get that close to expiring. With a key file a signature is
local CPU work; keyless, it is one IAM call per URL, so the cache is what keeps a busy
M6 page from calling IAM per view. A clip past ``CLIPPING_RETENTION_DAYS`` is answered
``expired``, with no URL to an object the lifecycle rule deletes.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from clipping.messages import ClipState, ClipStatusReport, poster_object_of
from clipping.signing import SignedUrl, SigningError, UrlSigner

# Signed pairs kept per proxy process (a few hundred bytes each).
CACHE_SIZE = 10_000


class ClipLinks:
    """Links of completed clips, signed by ``signer()``'s signer, made on first use: a
    keyless signer looks for its account (Application Default Credentials) only when a
    completed clip is first read, not when the proxy starts."""

    def __init__(
        self,
        signer: Callable[[], UrlSigner],
        ttl: timedelta,
        min_valid: timedelta,
        retention: timedelta | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._make_signer = signer
        self._signer: UrlSigner | None = None
        self._ttl = ttl
        self._min_valid = min_valid
        self._retention = retention
        self._clock = clock
        self._signed: OrderedDict[str, tuple[SignedUrl, SignedUrl]] = OrderedDict()
        self._lock = threading.Lock()

    def current(self, report: ClipStatusReport) -> ClipStatusReport:
        """``report`` with links valid for ``min_valid`` at least, or ``expired``.

        Blocking (it may sign): call it in a thread.
        """
        if report.status is not ClipState.COMPLETED or report.object_name is None:
            return report
        now = self._clock()
        if self._retention and report.finished_at and report.finished_at + self._retention <= now:
            return report.model_copy(
                update={
                    "status": ClipState.EXPIRED,
                    "download_url": None,
                    "poster_url": None,
                    "expires_at": None,
                    "reason": f"deleted {self._retention.days} days after completion "
                    "(the bucket's retention rule)",
                }
            )
        if report.expires_at and report.expires_at - now >= self._min_valid:
            return report
        clip, poster = self._fresh(report.object_name, now)
        return report.model_copy(
            update={
                "download_url": clip.url,
                "poster_url": poster.url,
                "expires_at": clip.expires_at,
            }
        )

    def _fresh(self, object_name: str, now: datetime) -> tuple[SignedUrl, SignedUrl]:
        with self._lock:
            signed = self._signed.get(object_name)
            if signed and signed[0].expires_at - now >= self._min_valid:
                self._signed.move_to_end(object_name)
                return signed
        signer = self._signer_once()
        signed = (
            signer.sign(object_name, self._ttl),
            signer.sign(poster_object_of(object_name), self._ttl),
        )
        with self._lock:
            self._signed[object_name] = signed
            while len(self._signed) > CACHE_SIZE:
                self._signed.popitem(last=False)
        return signed

    def _signer_once(self) -> UrlSigner:
        with self._lock:
            if self._signer is None:
                signer = self._make_signer()
                lifetime = min(self._ttl, signer.max_ttl)
                if self._min_valid >= lifetime:
                    raise SigningError(
                        f"CLIPPING_URL_MIN_VALID ({self._min_valid}) must be shorter than the "
                        f"URLs' lifetime ({lifetime} as {signer.signer_email} signs them)"
                    )
                self._signer = signer
            return self._signer
