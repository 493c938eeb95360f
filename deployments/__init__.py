"""Applying the service's Prefect objects: work pool, storage blocks, deployments.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments

Idempotent: run it after every release; existing objects are updated, not duplicated.
"""
