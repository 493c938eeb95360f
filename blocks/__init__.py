"""The clip bucket: where clips are stored and which key signs their URLs.

Every component builds it from the settings as a ``ClipBucket`` (``blocks.clip_bucket``),
with the key from the key file on its own host. ``blocks.gcs.save_clip_blocks`` saves the
``clip-bucket`` ``GcsBucket`` block and its ``clip-gcp`` ``GcpCredentials`` block
(``python -m deployments`` calls it) so the Prefect UI shows the bucket; the credentials
block holds the key file's path at most, never the key.
"""

from blocks.clip_bucket import ClipBucket

__all__ = ["ClipBucket"]
