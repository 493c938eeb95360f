"""Prefect blocks: where clips are stored and which key signs their URLs.

``clip-bucket`` is a prefect-gcp ``GcsBucket`` block holding the ``clip-gcp``
``GcpCredentials`` block (a service-account key). ``blocks.gcs.save_clip_blocks`` saves
both (``python -m deployments`` calls it); the flow reads them as a ``ClipBucket``
(``blocks.clip_bucket``), which does not import prefect-gcp. The listener and the proxy
build the same ``ClipBucket`` from the settings, so they need no Prefect to reach it.
"""

from blocks.clip_bucket import ClipBucket

__all__ = ["ClipBucket"]
