"""Saving the GCS blocks the flow uploads through and signs with."""

import json

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
