"""Webhooks (scope ``clip``): the caller's signing secret.

Completion callbacks (``proxy.webhooks``) are signed with a secret of the key that made the
request; ``GET /v1/webhooks/secret`` gives it to that key's holder, in Standard Webhooks'
``whsec_`` form, to verify them with. It is 503 while webhooks are not configured.
"""

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field

from proxy.deps import ClipCaller, ProxySettingsDep
from proxy.problems import problems
from proxy.webhooks import signing_secret, whsec

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_RESPONSES = problems(401, 403, 408, 413, 503)
_RESPONSES[503]["description"] = (
    "Webhooks are not configured on this proxy (no CLIPPING_PROXY_WEBHOOK_SECRET)."
)


class WebhookSecret(BaseModel):
    secret: str = Field(
        description="'whsec_' and the base64 of the secret whose HMAC-SHA256 signs this key's "
        "callbacks (webhook-signature)."
    )


@router.get("/secret", responses=_RESPONSES)
async def webhook_secret(
    caller: ClipCaller, proxy_settings: ProxySettingsDep, response: Response
) -> WebhookSecret:
    """The secret that signs the callbacks of this key's requests. The same on every call,
    until the proxy's master secret changes."""
    master = proxy_settings.webhook_secret
    if master is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "webhooks are not configured on this proxy"
        )
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecret(secret=whsec(signing_secret(master, caller.digest)))
