"""Signing as the flow does it, checked by the independent V4 verifier (no server needed)."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2.service_account import Credentials

from clipping.bucket import ClipBucket
from clipping.settings import Settings
from flows.clip_hand import v4_url_expiry
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


def test_the_bucket_from_the_settings_signs_with_the_key_file_and_never_holds_the_key(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPPING_SERVICE_ACCOUNT_FILE", str(key_file))
    bucket = ClipBucket.from_settings(Settings())
    url = (
        bucket.storage()
        .blob("hand_1/r.mp4")
        .generate_signed_url(
            version="v4",
            method="GET",
            expiration=timedelta(days=7),
            credentials=bucket.signing_credentials(),
            api_access_endpoint="http://127.0.0.1:4443",
        )
    )
    facts = verify_v4_url(url, _public_key(key_file))
    assert facts.signer == "clipping-local@gg-poker.iam.gserviceaccount.com"
    assert bucket.service_account_file == str(key_file)
    assert "PRIVATE KEY" not in repr(bucket) + bucket.model_dump_json()


def test_without_a_key_the_flows_bucket_says_how_to_provide_one() -> None:
    with pytest.raises(RuntimeError, match="CLIPPING_SERVICE_ACCOUNT_FILE"):
        ClipBucket(name="gg-subclips").signing_credentials()
