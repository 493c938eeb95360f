"""What the endpoints depend on, as ``Annotated`` aliases: the one place to override them.

Each dependency hands out one part of the app's ``Services`` (``proxy.services``), so a
test swaps any of them with ``app.dependency_overrides[get_publisher] = ...``.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from google.cloud.storage import Bucket
from prefect.client.orchestration import PrefectClient
from prefect.context import SettingsContext

from clipping.outcomes import RequestOutcomes
from clipping.settings import Settings
from proxy.accepted import AcceptedRequests
from proxy.access import Caller, RequireScope
from proxy.auth import Scope
from proxy.limits import RateLimiter
from proxy.links import ClipLinks
from proxy.metrics import ProxyMetrics
from proxy.services import Publisher, services_of
from proxy.settings import ProxySettings


def get_settings(request: Request) -> Settings:
    return services_of(request).settings


def get_proxy_settings(request: Request) -> ProxySettings:
    return services_of(request).proxy_settings


def get_limiter(request: Request) -> RateLimiter:
    return services_of(request).limiter


def get_publisher(request: Request) -> Publisher:
    return services_of(request).publisher


def get_links(request: Request) -> ClipLinks:
    return services_of(request).links


def get_metrics(request: Request) -> ProxyMetrics:
    return services_of(request).metrics


def get_accepted(request: Request) -> AcceptedRequests:
    accepted = services_of(request).accepted
    assert accepted is not None, "the app is not running"
    return accepted


def get_outcomes(request: Request) -> RequestOutcomes:
    outcomes = services_of(request).outcomes
    assert outcomes is not None, "the app is not running"
    return outcomes


def get_bucket(request: Request) -> Bucket:
    bucket = services_of(request).bucket
    assert bucket is not None, "the app is not running"
    return bucket


async def get_prefect(request: Request) -> AsyncIterator[PrefectClient]:
    # An async dependency runs in the endpoint's context, so the settings hold there.
    running = services_of(request)
    assert running.prefect is not None, "the app is not running"
    with SettingsContext(profile=running.profile, settings=running.prefect_settings):
        yield running.prefect


SettingsDep = Annotated[Settings, Depends(get_settings)]
ProxySettingsDep = Annotated[ProxySettings, Depends(get_proxy_settings)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
LinksDep = Annotated[ClipLinks, Depends(get_links)]
MetricsDep = Annotated[ProxyMetrics, Depends(get_metrics)]
AcceptedDep = Annotated[AcceptedRequests, Depends(get_accepted)]
OutcomesDep = Annotated[RequestOutcomes, Depends(get_outcomes)]
BucketDep = Annotated[Bucket, Depends(get_bucket)]
PrefectDep = Annotated[PrefectClient, Depends(get_prefect)]
ClipCaller = Annotated[Caller, Depends(RequireScope(Scope.CLIP))]
AdminCaller = Annotated[Caller, Depends(RequireScope(Scope.ADMIN))]
