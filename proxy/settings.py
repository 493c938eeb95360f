"""The proxy's configuration, from ``CLIPPING_PROXY_*`` environment variables."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPPING_PROXY_", frozen=True)

    database_url: str = Field(
        default="sqlite:///clipping-proxy.db",
        description="SQLAlchemy URL of the record of accepted requests (PostgreSQL in production).",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="Keys as 'scopes:key' entries separated by commas, scopes joined by '+' "
        "(e.g. 'clip:k1,admin+clip:k2'). Prefer api_keys_file in production.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of hashed keys, one 'scopes sha256:<hex>' per line "
        "(`python -m proxy.keys` makes them).",
    )
    publish_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Wait this long for Pub/Sub before answering 503."
    )
    prefect_retries: int = Field(
        default=1,
        ge=0,
        description="Retries of a Prefect API call before answering 503 "
        "(Prefect's own default, 5 with backoff, would hold M6 for half a minute).",
    )
    max_body_bytes: int = Field(
        default=16 * 1024, gt=0, description="Largest request body accepted (else 413)."
    )
    body_read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Whole request body within this long, else 408 and the connection closed "
        "(a client that sends a partial body would hold its connection open for good).",
    )
    docs_enabled: bool = Field(
        default=False,
        description="Serve /docs, /redoc and /openapi.json (off in production: openapi.yaml "
        "is the published schema).",
    )
    reconcile_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often accepted requests that have no run are looked at (proxy.reconcile).",
    )
    unstarted_seconds: float = Field(
        default=120.0,
        gt=0,
        description="An accepted request with no run this long after its publication is "
        "published again.",
    )
    max_publications: int = Field(
        default=3,
        gt=0,
        description="Publications of a request that never gets a run before it is failed "
        "with the reason.",
    )
    requests_per_minute: float = Field(
        default=600.0, gt=0, description="Clip requests per minute per key (else 429)."
    )
    request_burst: int = Field(
        default=60, gt=0, description="Requests a key may send at once before the rate applies."
    )
    count_completions: bool = Field(
        default=True,
        description="Read the metrics subscription and count every completion on /metrics "
        "(off: HTTP metrics only, for a proxy without Pub/Sub, e.g. in tests).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Master secret of the completion callbacks: each key's signing secret is "
        "derived from it (proxy.webhooks). Unset: webhooks are off and a request with a "
        "callback_url is refused.",
    )
    webhook_allow_loopback: bool = Field(
        default=False,
        description="Let callbacks go to loopback addresses, over http too (the local stack, "
        "tests); every other private or special address is refused regardless.",
    )
    webhook_max_attempts: int = Field(
        default=8,
        gt=0,
        description="POSTs of one callback before it is given up (5 s after the first "
        "failure, doubling, at most 5 min apart).",
    )


@lru_cache
def get_proxy_settings() -> ProxySettings:
    return ProxySettings()
