"""The Prefect blocks of the clip bucket, for the Prefect UI.

``blocks.gcs.save_clip_blocks`` saves the ``clip-bucket`` ``GcsBucket`` block and its
``clip-gcp`` ``GcpCredentials`` block (``python -m deployments`` calls it) so the UI shows
the bucket; the credentials block holds the key file's path at most, never the key. Every
component builds the bucket itself from the settings (``clipping.bucket.ClipBucket``).
"""
