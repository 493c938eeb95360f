"""The retention rule: clips and posters deleted ``CLIPPING_RETENTION_DAYS`` after upload.

A lifecycle rule of the clip bucket (GCS deletes the objects itself, at no cost to the
service), limited to clips and posters by their suffixes: a request's records
(``_records/{id}/``, JSON and a claim marker) stay, so its outcome still tells the status
API that the clip expired. Other rules of the bucket are kept; without a retention setting
the service's rule is removed.
"""

import logging
from typing import Any

from clipping.bucket import ClipBucket
from clipping.settings import Settings

logger = logging.getLogger(__name__)

CLIP_SUFFIXES = [".mp4", ".jpg"]


def is_retention_rule(rule: dict[str, Any]) -> bool:
    return (
        rule.get("action", {}).get("type") == "Delete"
        and rule.get("condition", {}).get("matchesSuffix") == CLIP_SUFFIXES
    )


def retention_rule(days: int) -> dict[str, Any]:
    return {
        "action": {"type": "Delete"},
        "condition": {"age": days, "matchesSuffix": CLIP_SUFFIXES},
    }


def with_retention(rules: list[dict[str, Any]], days: int | None) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules with the service's retention rule for ``days`` (none
    for None) in place of any earlier one; the other rules as they were."""
    others = [rule for rule in rules if not is_retention_rule(rule)]
    return others + ([retention_rule(days)] if days else [])


def apply_retention(settings: Settings) -> None:
    bucket = ClipBucket.from_settings(settings).storage()
    bucket.reload()
    rules = [dict(rule) for rule in bucket.lifecycle_rules]
    wanted = with_retention(rules, settings.retention_days)
    if wanted == rules:
        logger.info("retention of gs://%s unchanged", bucket.name)
        return
    bucket.lifecycle_rules = wanted
    bucket.patch()
    if settings.retention_days:
        logger.info(
            "gs://%s deletes clips %d days after upload", bucket.name, settings.retention_days
        )
    else:
        logger.info("gs://%s keeps clips until they are deleted", bucket.name)
