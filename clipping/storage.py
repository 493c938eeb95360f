"""The clip bucket through the storage client itself, for the listener and the proxy.

They must reach the request records (``flows.records``) while Prefect, which keeps the
flow's ``GcsBucket`` block, may be down: so no block here, only the settings.
"""

from google.cloud.storage import Bucket, Client
from google.oauth2.service_account import Credentials

from clipping.settings import Settings

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


def clip_bucket(settings: Settings) -> Bucket:
    """With ``CLIPPING_SERVICE_ACCOUNT_FILE`` when set, else Application Default Credentials."""
    credentials = (
        Credentials.from_service_account_file(str(settings.service_account_file), scopes=[SCOPE])
        if settings.service_account_file
        else None
    )
    return Client(project=settings.gcp_project, credentials=credentials).bucket(settings.bucket)
