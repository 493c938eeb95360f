"""Who is calling: a key's digest and scopes, checked before anything else is answered.

``RequireScope`` is the endpoints' dependency. FastAPI parses a request body before it runs
dependencies, so an answer about the body (``refusal_of``) checks the key first: a caller
without a valid key learns nothing about how its body was read.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proxy.auth import ApiKeys, Scope, digest
from proxy.services import services_of

bearer = HTTPBearer(auto_error=False, description="An API key with the endpoint's scope.")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its key's digest (never the key) and scopes."""

    digest: str
    scopes: frozenset[Scope]

    @property
    def is_admin(self) -> bool:
        """An admin sees every caller's requests."""
        return Scope.ADMIN in self.scopes


def api_keys(request: Request) -> ApiKeys:
    return services_of(request).keys


class RequireScope:
    """Dependency: the ``Caller``, once its key is known (else 401) and holds ``scope`` (403)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self,
        keys: Annotated[ApiKeys, Depends(api_keys)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        return self.check(keys, credentials)

    def check(self, keys: ApiKeys, credentials: HTTPAuthorizationCredentials | None) -> Caller:
        if credentials is None:
            raise _unauthorized("an API key is required (Authorization: Bearer <key>)")
        scopes = keys.scopes_of(credentials.credentials)
        if not scopes:
            raise _unauthorized("the API key is not valid")
        if self.scope not in scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"the key lacks scope {self.scope}")
        return Caller(digest(credentials.credentials), scopes)


async def refusal_of(request: Request) -> Response | None:
    """The 401 or 403 answer the request's endpoint owes its caller, or None when the key
    passes (or the endpoint is open). For error handlers that run before the dependencies."""
    requirement = _requirement_of(request)
    if requirement is None:
        return None
    try:
        requirement.check(api_keys(request), await bearer(request))
    except HTTPException as refusal:
        return await http_exception_handler(request, refusal)
    return None


def _requirement_of(request: Request) -> RequireScope | None:
    # The matched route is in the scope once routing is done; its dependant lists the
    # dependencies its endpoint declared.
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return None
    return next(
        (dep.call for dep in dependant.dependencies if isinstance(dep.call, RequireScope)),
        None,
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )
