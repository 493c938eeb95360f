"""Saving the GCS blocks that show the clip bucket in the Prefect UI; they hold no key."""

from prefect_gcp import GcpCredentials
from prefect_gcp.cloud_storage import GcsBucket

from clipping.settings import Settings


def save_clip_blocks(settings: Settings) -> GcsBucket:
    """Create or update the credentials and bucket blocks; idempotent.

    The credentials block names the key file (``CLIPPING_SERVICE_ACCOUNT_FILE``), never
    its contents: anyone who may read blocks through the Prefect API, secrets included,
    must not get the signing key. An update also clears a key saved by an earlier release
    (the saved data is replaced field by field, ``service_account_info`` by None).
    """
    credentials = GcpCredentials(
        service_account_file=settings.service_account_file, project=settings.gcp_project
    )
    credentials.save(settings.gcp_credentials_block, overwrite=True)
    bucket = GcsBucket(bucket=settings.bucket, gcp_credentials=credentials)
    bucket.save(settings.gcs_block, overwrite=True)
    return bucket
