"""The clip bucket as every component uses it: built from the settings, never from a block.

The settings are the one source of the bucket's name, project and key:
``CLIPPING_BUCKET``, ``CLIPPING_GCP_PROJECT`` and ``CLIPPING_SERVICE_ACCOUNT_FILE``, a
key file on the host itself, readable only by the service's user (or none: Application
Default Credentials, and keyless signing, ``clipping.signing``). The ``clip-bucket``
block (``blocks.gcs``) names the same bucket for the Prefect UI but holds no key, so
whoever can read blocks from the Prefect API cannot sign URLs. Building the clients here
also spares the flow process prefect-gcp's import (~0.45 s: its package imports the
BigQuery, Cloud Run and discovery clients) and any call to Prefect, so the listener and
the proxy reach the request records while Prefect is down.
"""

from functools import lru_cache

from google.cloud.storage import Bucket, Client
from google.oauth2.service_account import Credentials
from pydantic import BaseModel, ConfigDict

from clipping.settings import Settings

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class ClipBucket(BaseModel):
    """A frozen value, so tasks can take it as a parameter (Prefect hashes task inputs).

    It holds the key file's path, never the key.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    project: str | None = None
    service_account_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ClipBucket":
        key_file = settings.service_account_file
        return cls(
            name=settings.bucket,
            project=settings.gcp_project,
            service_account_file=str(key_file) if key_file else None,
        )

    def credentials(self) -> Credentials | None:
        """The service account's credentials; None for Application Default Credentials."""
        return _service_account(self.service_account_file)

    def storage(self) -> Bucket:
        """A storage-client bucket: one client (one token) for all its calls; no request."""
        return Client(project=self.project, credentials=self.credentials()).bucket(self.name)


@lru_cache(maxsize=8)
def _service_account(key_file: str | None) -> Credentials | None:
    """One credentials object (one parsed RSA key, one token) per key file and process."""
    if key_file:
        return Credentials.from_service_account_file(key_file, scopes=SCOPES)
    return None
