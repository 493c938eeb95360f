"""Prefect blocks: where clips are stored and which key signs their URLs.

``clip-bucket`` is a prefect-gcp ``GcsBucket`` block holding the ``clip-gcp``
``GcpCredentials`` block (a service-account key). Both are saved by
``python -m deployments``; the flow loads the bucket by name.
"""

from blocks.gcs import load_clip_bucket, save_clip_blocks, signing_credentials, storage_bucket

__all__ = ["load_clip_bucket", "save_clip_blocks", "signing_credentials", "storage_bucket"]
