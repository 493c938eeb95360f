"""Signing as the flow and the status API do it, with a key file or keyless through the
IAM signBlob stand-in, checked by the independent V4 verifier."""

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2.service_account import Credentials
from pydantic import ValidationError

from clipping.bucket import SCOPES, ClipBucket
from clipping.settings import Settings
from clipping.signing import KEYLESS_MAX_TTL, IamSigner, SigningError, UrlSigner, v4_url_expiry
from emulators import google_auth
from stack.provision import write_service_account_key
from tests.signed_urls import verify_v4_url

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "sa.json"
    write_service_account_key(path, "gg-poker", "http://127.0.0.1:9/token")
    return path


def _signed_url(key_file: Path, object_name: str = "hand_1/req 1.mp4") -> str:
    credentials = Credentials.from_service_account_file(key_file)
    client = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
    blob = client.bucket("gg-subclips").blob(object_name)
    return blob.generate_signed_url(
        version="v4",
        method="GET",
        expiration=timedelta(days=7),
        credentials=credentials,
        api_access_endpoint="http://127.0.0.1:4443",
    )


def _public_key(key_file: Path):
    pem = json.loads(key_file.read_text())["private_key"].encode()
    return load_pem_private_key(pem, password=None).public_key()


def test_a_signed_url_verifies_and_lives_seven_days(key_file: Path) -> None:
    url = _signed_url(key_file)
    facts = verify_v4_url(url, _public_key(key_file))
    assert facts.lifetime == timedelta(days=7)
    assert facts.signer == "clipping-local@gg-poker.iam.gserviceaccount.com"
    assert v4_url_expiry(url) == facts.expires_at


@pytest.mark.parametrize(
    ("old", "new"),
    [("hand_1", "hand_2"), ("X-Goog-Expires=604800", "X-Goog-Expires=604801")],
)
def test_a_tampered_url_does_not_verify(key_file: Path, old: str, new: str) -> None:
    url = _signed_url(key_file)
    assert old in url
    with pytest.raises(InvalidSignature):
        verify_v4_url(url.replace(old, new), _public_key(key_file))


def test_a_url_signed_for_get_does_not_verify_for_put(key_file: Path) -> None:
    with pytest.raises(InvalidSignature):
        verify_v4_url(_signed_url(key_file), _public_key(key_file), method="PUT")


def test_another_key_does_not_verify(key_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    write_service_account_key(other, "gg-poker", "http://127.0.0.1:9/token")
    with pytest.raises(InvalidSignature):
        verify_v4_url(_signed_url(key_file), _public_key(other))


def test_the_signer_from_the_settings_signs_with_the_key_file_and_never_holds_the_key(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPPING_SERVICE_ACCOUNT_FILE", str(key_file))
    settings = Settings()
    signed = UrlSigner.from_settings(settings).sign("hand_1/r.mp4", timedelta(days=7))
    facts = verify_v4_url(signed.url, _public_key(key_file))
    assert facts.signer == "clipping-local@gg-poker.iam.gserviceaccount.com"
    assert signed.expires_at == facts.expires_at
    bucket = ClipBucket.from_settings(settings)
    assert bucket.service_account_file == str(key_file)
    assert "PRIVATE KEY" not in repr(bucket) + bucket.model_dump_json()


@pytest.fixture(scope="module")
def iam_stand_in(key_file: Path) -> Iterator[str]:
    server = google_auth.serve("127.0.0.1", 0, key_file)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _keyless(key_file: Path, endpoint: str, email: str) -> UrlSigner:
    """Signing through signBlob, with a token from the stand-in's token endpoint."""
    info = json.loads(key_file.read_text())
    token_source = Credentials.from_service_account_info(
        {**info, "token_uri": f"{endpoint}/token"}, scopes=SCOPES
    )
    gcs = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
    return UrlSigner(
        gcs.bucket("gg-subclips"), IamSigner(token_source, email, endpoint), KEYLESS_MAX_TTL
    )


def test_keyless_signing_goes_through_sign_blob_and_lives_twelve_hours_at_most(
    key_file: Path, iam_stand_in: str
) -> None:
    email = "clipping-local@gg-poker.iam.gserviceaccount.com"
    signed = _keyless(key_file, iam_stand_in, email).sign("hand_1/r.mp4", timedelta(days=7))
    facts = verify_v4_url(signed.url, _public_key(key_file))
    assert facts.signer == email
    assert facts.lifetime == timedelta(hours=12)
    assert signed.expires_at == facts.expires_at


def test_keyless_signing_as_an_account_iam_refuses_says_what_iam_answered(
    key_file: Path, iam_stand_in: str
) -> None:
    signer = _keyless(key_file, iam_stand_in, "someone-else@gg-poker.iam.gserviceaccount.com")
    with pytest.raises(SigningError, match=r"signBlob as someone-else@.* answered 403"):
        signer.sign("hand_1/r.mp4", timedelta(hours=1))


def test_the_minimum_validity_must_be_shorter_than_the_lifetime() -> None:
    with pytest.raises(ValidationError, match="url_min_valid must be shorter"):
        Settings(signed_url_ttl=timedelta(hours=1), url_min_valid=timedelta(hours=1))
