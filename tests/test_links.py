"""Links a completed clip's status answers: signed again when about to go stale, cached,
verified by the independent V4 checker; none once the clip is past its retention."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2.service_account import Credentials

from clipping.messages import ClipState, ClipStatusReport
from clipping.signing import SignedUrl, SigningError, UrlSigner
from proxy.links import ClipLinks
from stack.provision import write_service_account_key
from tests.signed_urls import verify_v4_url

pytestmark = pytest.mark.unit

CLIP, POSTER = "hand_1/r1.mp4", "hand_1/r1.jpg"
WEEK = timedelta(days=7)


class CountingSigner(UrlSigner):
    """A key-file signer that counts its signatures."""

    def __init__(self, key_file: Path, max_ttl: timedelta = WEEK) -> None:
        gcs = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
        super().__init__(
            gcs.bucket("gg-subclips"), Credentials.from_service_account_file(key_file), max_ttl
        )
        self.signed: list[str] = []

    def sign(self, object_name: str, ttl: timedelta) -> SignedUrl:
        self.signed.append(object_name)
        return super().sign(object_name, ttl)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "sa.json"
    write_service_account_key(path, "gg-poker", "http://127.0.0.1:9/token")
    return path


@pytest.fixture
def signer(key_file: Path) -> CountingSigner:
    return CountingSigner(key_file)


def _public_key(key_file: Path):
    pem = json.loads(key_file.read_text())["private_key"].encode()
    return load_pem_private_key(pem, password=None).public_key()


def _completed(signer: UrlSigner, url_ttl: timedelta, **fields: object) -> ClipStatusReport:
    """A completed clip's answer as stored at completion, its URLs signed for ``url_ttl``."""
    clip, poster = signer.sign(CLIP, url_ttl), signer.sign(POSTER, url_ttl)
    return ClipStatusReport(
        request_id="r1",
        status=ClipState.COMPLETED,
        download_url=clip.url,
        poster_url=poster.url,
        expires_at=clip.expires_at,
        object_name=CLIP,
        finished_at=datetime.now(UTC),
        **fields,
    )


def _links(signer: UrlSigner, **overrides: object) -> ClipLinks:
    options: dict = {"ttl": WEEK, "min_valid": timedelta(hours=1), "retention": None}
    return ClipLinks(lambda: signer, **{**options, **overrides})


def test_a_stored_url_about_to_expire_is_signed_again_for_the_full_lifetime(
    signer: CountingSigner, key_file: Path
) -> None:
    stored = _completed(signer, timedelta(minutes=10))  # completed long ago: 10 min left
    answered = _links(signer).current(stored)
    now = datetime.now(UTC)
    for url, path in [(answered.download_url, CLIP), (answered.poster_url, POSTER)]:
        assert url is not None and path in url
        facts = verify_v4_url(url, _public_key(key_file))
        assert facts.expires_at - now >= timedelta(hours=1)
        assert facts.lifetime == WEEK
    assert (
        answered.expires_at
        == verify_v4_url(answered.download_url, _public_key(key_file)).expires_at
    )
    assert answered.download_url != stored.download_url


def test_a_stored_url_valid_long_enough_is_answered_as_stored(signer: CountingSigner) -> None:
    stored = _completed(signer, timedelta(hours=2))
    signer.signed.clear()
    assert _links(signer).current(stored) == stored
    assert signer.signed == []


def test_urls_signed_again_are_reused_until_they_too_get_close_to_expiring(
    signer: CountingSigner,
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    links = _links(signer, ttl=timedelta(hours=3), clock=lambda: clock[0])
    stored = _completed(signer, timedelta(minutes=10))
    signer.signed.clear()
    first = links.current(stored)
    assert links.current(stored).download_url == first.download_url
    assert signer.signed == [CLIP, POSTER]  # one pair for both answers
    clock[0] = now + timedelta(hours=2, minutes=1)  # the pair has < 1 h left
    links.current(stored)
    assert signer.signed == [CLIP, POSTER, CLIP, POSTER]


def test_a_clip_past_its_retention_is_expired_without_urls(signer: CountingSigner) -> None:
    stored = _completed(signer, WEEK)
    clock = lambda: datetime.now(UTC) + timedelta(days=30, seconds=1)  # noqa: E731
    answered = _links(signer, retention=timedelta(days=30), clock=clock).current(stored)
    assert answered.status is ClipState.EXPIRED
    assert (answered.download_url, answered.poster_url, answered.expires_at) == (None, None, None)
    assert answered.reason == "deleted 30 days after completion (the bucket's retention rule)"
    inside = _links(signer, retention=timedelta(days=30)).current(stored)
    assert inside.status is ClipState.COMPLETED


def test_answers_other_than_completed_are_left_alone(signer: CountingSigner) -> None:
    failed = ClipStatusReport(request_id="r1", status=ClipState.FAILED, reason="no such file")
    assert _links(signer).current(failed) == failed


def test_a_minimum_beyond_what_the_signer_can_sign_is_a_readable_error(key_file: Path) -> None:
    keyless_like = CountingSigner(key_file, max_ttl=timedelta(hours=12))
    links = _links(keyless_like, min_valid=timedelta(hours=12))
    stored = _completed(keyless_like, timedelta(minutes=10))
    with pytest.raises(SigningError, match=r"CLIPPING_URL_MIN_VALID \(12:00:00\) must be shorter"):
        links.current(stored)
