"""Answers that refuse: RFC 9457 problem details for every error the gateway gives.

A :class:`GatewayError` says its status, title, code, detail and failing
fields; a request FastAPI itself refuses (a path parameter, an unknown route)
gets the same shape, so a client reads one kind of error body.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.bus import FieldIssue
from services.gateway._errors import (
    GatewayError,
    InternalError,
    ReportRejectedError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from services.gateway._openapi import PROBLEM_MEDIA_TYPE

# Not a 413: closing while the client still sends its body would reset the
# connection before it reads the answer.
_CLOSES_CONNECTION = (UnauthorizedError, RequestTimeoutError)


def problem(error: GatewayError) -> Response:
    """The RFC 9457 answer for ``error``."""
    headers: dict[str, str] = {}
    if isinstance(error, ServiceUnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="oix-gateway"'
    if isinstance(error, _CLOSES_CONNECTION):
        # An unknown client, or one that stalled, does not keep the connection.
        headers["Connection"] = "close"
    return Response(
        orjson.dumps(problem_body(error)),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def problem_body(error: GatewayError) -> dict[str, Any]:
    """The problem details of ``error`` as JSON data (also one item of a batch answer)."""
    return {
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "issues": [{"path": i.path, "reason": i.reason} for i in error.issues],
        "message_id": error.message_id,
    }


async def on_gateway_error(_: Request, error: Exception) -> Response:
    """A :class:`GatewayError` raised by a route or a dependency."""
    assert isinstance(error, GatewayError)
    return problem(error)


async def on_invalid_request(_: Request, error: Exception) -> Response:
    """A request FastAPI refused (a path parameter or header), with the failing fields."""
    assert isinstance(error, RequestValidationError)
    issues = []
    for item in error.errors():
        where, *rest = [str(part) for part in item["loc"]]
        issues.append(FieldIssue(f"{'.'.join(rest)} ({where})", str(item["msg"])))
    return problem(ReportRejectedError("the request is not valid", issues))


async def on_http_error(_: Request, error: Exception) -> Response:
    """An unknown route or method, in the problem shape."""
    assert isinstance(error, StarletteHTTPException)
    body: dict[str, Any] = {
        "title": "Not found" if error.status_code == 404 else "Request refused",  # noqa: PLR2004
        "status": error.status_code,
        "detail": str(error.detail),
        "code": "not_found" if error.status_code == 404 else "http_error",  # noqa: PLR2004
        "issues": [],
        "message_id": None,
    }
    return Response(
        orjson.dumps(body),
        status_code=error.status_code,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=getattr(error, "headers", None),
    )


async def on_unexpected_error(_: Request, error: Exception) -> Response:
    """A failure no handler foresaw: still problem details, never a bare ``text/plain`` 500.

    Starlette logs the exception itself (and re-raises it after this answer).
    """
    return problem(
        InternalError(f"the gateway failed on this request ({type(error).__name__})"),
    )


def add_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with problem details."""
    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
