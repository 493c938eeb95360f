"""Configuration from environment variables (prefix ``CLIPPING_``) with production defaults.

The Google client libraries read their own variables: ``PUBSUB_EMULATOR_HOST`` and
``STORAGE_EMULATOR_HOST`` point them at emulators; Prefect reads ``PREFECT_API_URL``.
"""

import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from clipping.outputs import ClipOutput
from clipping.sites import Site, parse_sites, site_serving

# V4 signed URLs cannot live longer than this; the client library refuses more.
MAX_SIGNED_URL_TTL = timedelta(days=7)
# The flow's name (flows/clip_hand.py): the first half of every deployment's full name.
CLIP_FLOW = "clip-hand"


class Settings(BaseSettings):
    """Every knob of the service. Each field is read from ``CLIPPING_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CLIPPING_", frozen=True)

    nas_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        default=(Path("/mnt/nas"),),
        description="Directories recordings may be read from, separated by ':'. "
        "A path that resolves (symlinks included) outside all of them is refused.",
    )
    sites: Annotated[tuple[Site, ...], NoDecode] = Field(
        default=(),
        description="NAS sites as 'name=root:root;name=root' (clipping.sites): each site's "
        "workers read its roots only, and a request runs on a worker of the site holding "
        "its recording. Unset: every worker reads every NAS root.",
    )
    gcp_project: str = Field(
        default="gg-poker", description="Project of the topics, subscriptions and bucket."
    )
    requests_topic: str = Field(default="clipping-requests", description="Where requests arrive.")
    requests_subscription: str = Field(
        default="clipping-worker", description="The listener's subscription to requests."
    )
    completions_topic: str = Field(
        default="clipping-complete", description="Where completions are announced."
    )
    webhooks_subscription: str = Field(
        default="clipping-webhooks",
        description="The proxy's subscription to completions: it POSTs each to the request's "
        "callback_url.",
    )
    metrics_subscription: str = Field(
        default="clipping-metrics",
        description="The proxy's subscription to completions it counts for /metrics.",
    )
    bucket: str = Field(default="gg-subclips", description="Bucket of the clips and records.")
    gcs_block: str = Field(default="clip-bucket", description="Name of the saved GcsBucket block.")
    gcp_credentials_block: str = Field(
        default="clip-gcp", description="Name of the saved GCP credentials block."
    )
    service_account_file: Path | None = Field(
        default=None,
        description="Service-account key (JSON) file on this host, readable by the service "
        "alone; its private key signs download URLs (the credentials block names the file, "
        "never the key). Unset: Application Default Credentials.",
    )
    deployment: str = Field(
        default=f"{CLIP_FLOW}/clip-hand",
        description=f"The flow's deployment as '{CLIP_FLOW}/<name>' (prefect.yaml takes the "
        "name from it).",
    )
    work_pool: str = Field(default="nas-pool", description="The NAS hosts' work pool.")
    worker_limit: int = Field(default=4, gt=0, description="Flow runs at once per NAS agent.")
    listener_metrics_port: int = Field(
        default=9464, description="Port of the listener's Prometheus metrics (GET /metrics)."
    )
    worker_site: str | None = Field(
        default=None,
        description="The site (of CLIPPING_SITES) a worker serves (agent_pool.worker --site).",
    )
    worker_metrics_port: int = Field(
        default=9465, description="Port of a worker's Prometheus metrics (GET /metrics)."
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address the listener's and workers' metrics ports bind (the scraper's "
        "network; 127.0.0.1 keeps them on the host).",
    )
    worker_health_port: int = Field(
        default=8005, gt=0, lt=65536, description="Port of a NAS agent's GET /health."
    )
    max_clip_seconds: float = Field(
        default=1800.0, gt=0, description="Longest range a request may ask for (30 min)."
    )
    dead_letter_topic: str = Field(
        default="clipping-requests-dead",
        description="Where requests are parked after too many deliveries.",
    )
    dead_letter_subscription: str = Field(
        default="clipping-requests-dead",
        description="Keeps parked requests on the dead-letter topic for operators.",
    )
    max_delivery_attempts: int = Field(
        default=5,
        ge=5,
        le=100,
        description="Deliveries of a request before it is parked on the dead-letter topic.",
    )
    listener_max_messages: int = Field(
        default=8,
        gt=0,
        description="Requests the listener holds unacknowledged at once "
        "(sized to the pool: 2 workers x 4 runs).",
    )
    max_flow_attempts: int = Field(
        default=4,
        gt=0,
        description="Runs of one clip (retries and reruns after crashes) before it fails for good.",
    )
    upload_chunk_bytes: int = Field(
        default=100 * 1024 * 1024,
        gt=0,
        multiple_of=256 * 1024,
        description="Resumable-upload chunk (the Google client's default size). Chunks are "
        "streamed from disk, so the size costs no memory: only what is resent after an "
        "interrupted chunk.",
    )
    signed_url_ttl: timedelta = Field(
        default=MAX_SIGNED_URL_TTL,
        description="Lifetime of download URLs (at most 7 days; 12 hours when signing "
        "without a key file).",
    )
    url_min_valid: timedelta = Field(
        default=timedelta(hours=1),
        description="The status API answers a completed clip's URLs valid for at least this "
        "long: it signs them again when the stored ones expire sooner.",
    )
    signing_service_account: str | None = Field(
        default=None,
        description="Without a key file: the service account whose identity signs URLs "
        "through IAM signBlob. Unset: the one Application Default Credentials run as.",
    )
    iam_credentials_url: str = Field(
        default="https://iamcredentials.googleapis.com",
        description="The IAM Credentials API that signs URLs without a key file.",
    )
    retention_days: int | None = Field(
        default=None,
        gt=0,
        description="Clips and posters are deleted this many days after upload (a bucket "
        "lifecycle rule set by `python -m deployments`); the status API then answers "
        "'expired'. Unset: kept until deleted.",
    )
    default_output: ClipOutput = Field(
        default=ClipOutput.WEB,
        description="Output of a request that names none: 'web' (H.264 that browsers play; "
        "HEVC recordings are re-encoded) or 'source' (the recording's codec).",
    )
    live_wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest a clip waits for a recording still being written to reach the "
        "clip's end; then it fails, saying how far the recording got.",
    )
    live_idle_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A recording whose size and mtime have not changed for this long is "
        "finished: a range past its end is clamped to its last decodable frame.",
    )
    live_poll_seconds: float = Field(
        default=0.2,
        gt=0,
        description="How often a waiting clip looks again at a recording being written.",
    )
    work_dir: Path | None = Field(
        default=None, description="Parent of per-run scratch directories (default: system temp)."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of every process (clipping.logs): 'text' (time, logger, level, "
        "message, on stderr) or 'json' (one object per line on stdout, with Cloud Logging's "
        "field names, the trace and the request's ids).",
    )
    flow_log_file: Path | None = Field(
        default=None,
        description="Flow processes append their log lines to this file: the deployment "
        "discards their output (stream_output: false). Unset: their lines reach the Prefect "
        "API (the UI) alone.",
    )

    @field_validator("nas_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(part) for part in value.split(os.pathsep) if part)
        return value

    @field_validator("sites", mode="before")
    @classmethod
    def _parse_sites(cls, value: object) -> object:
        return parse_sites(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sites_within_nas_roots(self) -> "Settings":
        outside = [
            str(root)
            for site in self.sites
            for root in site.roots
            if not any(root == nas or nas in root.parents for nas in self.nas_roots)
        ]
        if outside:
            raise ValueError(f"site roots outside every NAS root: {outside}")
        return self

    def site_of(self, recording: Path) -> Site | None:
        """The site serving ``recording`` (a resolved path); None when sites are unset or
        none serves it."""
        return site_serving(recording, self.sites)

    @field_validator("nas_roots")
    @classmethod
    def _roots_are_absolute(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        if not roots:
            raise ValueError("at least one NAS root is required")
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"NAS roots must be absolute paths: {relative}")
        return roots

    @field_validator("deployment")
    @classmethod
    def _deployment_of_the_clip_flow(cls, deployment: str) -> str:
        flow_name, _, name = deployment.partition("/")
        if flow_name != CLIP_FLOW or not name or "/" in name:
            raise ValueError(f"deployment must be '{CLIP_FLOW}/<deployment name>'")
        return deployment

    @property
    def deployment_name(self) -> str:
        """The deployment's own name (``deployment`` without the flow's)."""
        return self.deployment.partition("/")[2]

    @field_validator("signed_url_ttl")
    @classmethod
    def _ttl_within_v4_limit(cls, ttl: timedelta) -> timedelta:
        if not timedelta(0) < ttl <= MAX_SIGNED_URL_TTL:
            raise ValueError("signed_url_ttl must be positive and at most 7 days")
        return ttl

    @model_validator(mode="after")
    def _urls_outlive_their_minimum(self) -> "Settings":
        if self.url_min_valid >= self.signed_url_ttl:
            raise ValueError("url_min_valid must be shorter than signed_url_ttl")
        return self

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.gcp_project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.gcp_project}/subscriptions/{subscription}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
