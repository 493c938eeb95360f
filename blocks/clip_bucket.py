"""The clip bucket: the ``clip-bucket`` block as the flow uses it, read without prefect-gcp.

Importing ``prefect_gcp`` costs a flow process ~0.45 s on this machine (its package
imports the BigQuery, Cloud Run and discovery clients), more than the rest of the flow's
own imports. The flow needs only the bucket's name and the credentials' key, so it reads
the saved block document and builds clients as ``GcpCredentials`` does: the key (info or
file) with the cloud-platform scope, else Application Default Credentials.
"""

import json
from functools import lru_cache

from google.cloud.storage import Bucket, Client
from google.oauth2.service_account import Credentials
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, SecretStr

from clipping.settings import Settings

BLOCK_TYPE = "gcs-bucket"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class ClipBucket(BaseModel):
    """A frozen value, so tasks can take it as a parameter (Prefect hashes task inputs)."""

    model_config = ConfigDict(frozen=True)

    name: str
    project: str | None = None
    service_account_json: SecretStr | None = None
    service_account_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ClipBucket":
        """From ``CLIPPING_*`` alone, for the listener and the proxy: they must reach the
        request records (``flows.records``) while Prefect, which keeps the block, is down."""
        key_file = settings.service_account_file
        return cls(
            name=settings.bucket,
            project=settings.gcp_project,
            service_account_file=str(key_file) if key_file else None,
        )

    @classmethod
    def load(cls, settings: Settings) -> "ClipBucket":
        """Read the ``CLIPPING_GCS_BLOCK`` document, with its credentials block's key."""
        with get_client(sync_client=True) as client:
            try:
                document = client.read_block_document_by_name(
                    settings.gcs_block, BLOCK_TYPE, include_secrets=True
                )
            except ObjectNotFound:
                raise LookupError(
                    f"no {BLOCK_TYPE} block named {settings.gcs_block!r}: "
                    "run `python -m deployments` to save it"
                ) from None
        credentials = document.data.get("gcp_credentials") or {}
        info = credentials.get("service_account_info")
        return cls(
            name=document.data["bucket"],
            project=credentials.get("project"),
            service_account_json=SecretStr(json.dumps(info)) if info else None,
            service_account_file=credentials.get("service_account_file"),
        )

    def credentials(self) -> Credentials | None:
        """The service account's credentials; None for Application Default Credentials."""
        key = self.service_account_json.get_secret_value() if self.service_account_json else None
        return _service_account(key, self.service_account_file)

    def storage(self) -> Bucket:
        """A storage-client bucket: one client (one token) for all its calls; no request."""
        return Client(project=self.project, credentials=self.credentials()).bucket(self.name)

    def signing_credentials(self) -> Credentials:
        """The key that signs V4 URLs."""
        credentials = self.credentials()
        if credentials is None:
            raise RuntimeError(
                "signing download URLs needs a service-account key in the credentials block "
                "(set CLIPPING_SERVICE_ACCOUNT_FILE and run `python -m deployments`)"
            )
        return credentials


@lru_cache(maxsize=8)
def _service_account(key_json: str | None, key_file: str | None) -> Credentials | None:
    """One credentials object (one parsed RSA key, one token) per key and process."""
    if key_json:
        return Credentials.from_service_account_info(json.loads(key_json), scopes=SCOPES)
    if key_file:
        return Credentials.from_service_account_file(key_file, scopes=SCOPES)
    return None
