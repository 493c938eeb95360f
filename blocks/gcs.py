"""The GCS blocks the flow uploads through and signs with."""

import json

from google.cloud.storage import Bucket
from google.oauth2.service_account import Credentials as ServiceAccountCredentials
from prefect_gcp import GcpCredentials
from prefect_gcp.cloud_storage import GcsBucket

from clipping.settings import Settings


def save_clip_blocks(settings: Settings) -> GcsBucket:
    """Create or update the credentials and bucket blocks; idempotent."""
    key = (
        json.loads(settings.service_account_file.read_text())
        if settings.service_account_file
        else None
    )
    credentials = GcpCredentials(service_account_info=key, project=settings.gcp_project)
    credentials.save(settings.gcp_credentials_block, overwrite=True)
    bucket = GcsBucket(bucket=settings.bucket, gcp_credentials=credentials)
    bucket.save(settings.gcs_block, overwrite=True)
    return bucket


def load_clip_bucket(settings: Settings) -> GcsBucket:
    return GcsBucket.load(settings.gcs_block)


def storage_bucket(bucket: GcsBucket) -> Bucket:
    """The bucket as a storage-client object: one client (one token) for all its calls.

    Unlike ``GcsBucket.get_bucket`` it makes no request; every ``GcsBucket`` file method
    builds a new client and fetches a new token, which a run would otherwise do per call.
    """
    return bucket.gcp_credentials.get_cloud_storage_client().bucket(bucket.bucket)


def signing_credentials(bucket: GcsBucket) -> ServiceAccountCredentials:
    """The key that signs V4 URLs: the service account stored in the bucket's credentials."""
    credentials = bucket.gcp_credentials.get_credentials_from_service_account()
    if not isinstance(credentials, ServiceAccountCredentials):
        raise RuntimeError(
            "signing download URLs needs a service-account key in the credentials block "
            "(set CLIPPING_SERVICE_ACCOUNT_FILE and run `python -m deployments`)"
        )
    return credentials
