"""The proxy's error answers: one model for every problem, and what each status means."""

from typing import Any

from fastapi import HTTPException, status
from pydantic import BaseModel


class Problem(BaseModel):
    """Every error answer: one line saying what was wrong."""

    detail: str


_PROBLEMS = {
    401: "No API key, or not a known one (checked before the body's problems are reported).",
    403: "The key lacks the scope this endpoint needs.",
    404: "No such request or agent, or a request another caller made.",
    408: "The request body did not arrive in time; the connection is closed.",
    409: "Conflicts with an earlier request (its id is taken), or with the pool's state.",
    413: "The request body is too large.",
    422: "The request is invalid: a field, or the body itself (not JSON, not UTF-8, nested "
    "too deeply, a number too long); the detail names each problem.",
    429: "Too many requests with this key; retry after the Retry-After header's seconds.",
    503: "A service behind the proxy (Prefect, Pub/Sub) is unreachable; retry later.",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """An endpoint's ``responses``: the problem answers it may give."""
    return {code: {"model": Problem, "description": _PROBLEMS[code]} for code in codes}


def not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail)
