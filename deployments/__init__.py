"""Applying what the service needs: Pub/Sub topology, the bucket's retention rule
(``CLIPPING_RETENTION_DAYS``), work pool, blocks, deployment, automation.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments

Idempotent: run it after every release; existing objects are updated, not duplicated.
"""
