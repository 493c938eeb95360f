"""V4 signed download URLs, with the service account's key file or without any key.

With ``CLIPPING_SERVICE_ACCOUNT_FILE`` the key file's private key signs, locally (about a
millisecond of CPU per URL). Without it, signing is keyless: the IAM Credentials API's
``signBlob`` signs as the service account (``CLIPPING_SIGNING_SERVICE_ACCOUNT``, or the one
Application Default Credentials run as: Cloud Run's, or workload identity's on a NAS host),
with an access token of those credentials. That is what google-cloud-storage does with
``service_account_email`` and ``access_token``; here the endpoint is a setting
(``CLIPPING_IAM_CREDENTIALS_URL``), so the local stack signs against its stand-in
(``emulators.google_auth``). Google rotates the keys behind ``signBlob`` and guarantees a
URL it signed for 12 hours only, so keyless URLs live at most ``KEYLESS_MAX_TTL``.
"""

import base64
import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import parse_qs, quote, urlsplit

import google.auth
from google.auth import credentials as auth_credentials
from google.auth import crypt
from google.auth.transport.requests import AuthorizedSession
from google.cloud.storage import Bucket
from pydantic import BaseModel

from clipping.bucket import SCOPES, ClipBucket
from clipping.settings import Settings

logger = logging.getLogger("clipping.signing")

KEYLESS_MAX_TTL = timedelta(hours=12)
SIGN_BLOB_TIMEOUT_S = 10.0


class SignedUrl(BaseModel):
    url: str
    expires_at: datetime


class SigningError(RuntimeError):
    """No URL could be signed: the reason says what to configure or what IAM answered."""


class IamSigner(auth_credentials.Signing, crypt.Signer):
    """Signs as ``service_account_email`` through the IAM Credentials ``signBlob`` API.

    The caller's credentials need ``iam.serviceAccounts.signBlob`` on that account
    (the Service Account Token Creator role, granted to the account itself).
    """

    def __init__(
        self, credentials: auth_credentials.Credentials, service_account_email: str, endpoint: str
    ) -> None:
        self._session = AuthorizedSession(credentials)  # refreshes the token as it expires
        self._email = service_account_email
        self._url = (
            f"{endpoint.rstrip('/')}/v1/projects/-/serviceAccounts/"
            f"{quote(service_account_email, safe='@')}:signBlob"
        )

    @property
    def signer_email(self) -> str:
        return self._email

    @property
    def signer(self) -> "IamSigner":
        return self

    @property
    def key_id(self) -> str | None:
        return None  # IAM picks (and rotates) the key

    def sign_bytes(self, message: bytes) -> bytes:
        return self.sign(message)

    def sign(self, message: str | bytes) -> bytes:
        payload = message.encode() if isinstance(message, str) else message
        response = self._session.post(
            self._url,
            json={"payload": base64.b64encode(payload).decode()},
            timeout=SIGN_BLOB_TIMEOUT_S,
        )
        if response.status_code != 200:
            raise SigningError(
                f"IAM signBlob as {self._email} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        return base64.b64decode(response.json()["signedBlob"])


class UrlSigner:
    """Signs GET URLs of the clip bucket's objects, for at most ``max_ttl``."""

    def __init__(
        self,
        bucket: Bucket,
        credentials: auth_credentials.Signing,
        max_ttl: timedelta,
    ) -> None:
        self._bucket = bucket
        self._credentials = credentials
        self.max_ttl = max_ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> "UrlSigner":
        clip_bucket = ClipBucket.from_settings(settings)
        key = clip_bucket.credentials()
        if key is not None:
            return cls(clip_bucket.storage(), key, settings.signed_url_ttl)
        return cls(
            clip_bucket.storage(),
            _keyless_signer(settings.signing_service_account, settings.iam_credentials_url),
            min(settings.signed_url_ttl, KEYLESS_MAX_TTL),
        )

    @property
    def signer_email(self) -> str:
        return self._credentials.signer_email

    def sign(self, object_name: str, ttl: timedelta) -> SignedUrl:
        """A URL of ``object_name`` valid for ``ttl`` (cut to ``max_ttl``) from now."""
        lifetime = min(ttl, self.max_ttl)
        url = self._bucket.blob(object_name).generate_signed_url(
            version="v4",
            method="GET",
            expiration=lifetime,
            credentials=self._credentials,
        )
        return SignedUrl(url=url, expires_at=v4_url_expiry(url))


def v4_url_expiry(url: str) -> datetime:
    """When a V4 signed URL stops working: its signing time plus its lifetime."""
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed_at + timedelta(seconds=int(query["X-Goog-Expires"][0]))


@lru_cache(maxsize=4)
def _keyless_signer(email: str | None, endpoint: str) -> IamSigner:
    """One signer (one token, one connection pool) per account and process."""
    credentials, _ = google.auth.default(scopes=SCOPES)
    if email is None:
        credentials.refresh(google.auth.transport.requests.Request())
        email = getattr(credentials, "service_account_email", None)
    if not email or email == "default":
        raise SigningError(
            "signing download URLs needs a service account: set CLIPPING_SERVICE_ACCOUNT_FILE "
            "(a key file) or CLIPPING_SIGNING_SERVICE_ACCOUNT (keyless, through IAM signBlob), "
            "or run as a service account (Cloud Run, workload identity)"
        )
    logger.info("signing URLs without a key, as %s through %s", email, endpoint)
    return IamSigner(credentials, email, endpoint)
