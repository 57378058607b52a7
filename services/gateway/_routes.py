"""The gateway's routes: publish one report or a batch, ask where one went, and operations.

Handlers read the body themselves (size limit before anything else, then JSON,
then the pipeline's validation) and answer with orjson-encoded bodies; the
pydantic models in :mod:`._openapi` describe the answers for the OpenAPI
document without costing a validation per request. Each handler finds its
:class:`GatewayService` on the application (``app.state.service``).
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.bus import FieldIssue, get_logger, new_traceparent
from services.gateway._admission import Submission
from services.gateway._errors import (
    ForbiddenError,
    GatewayError,
    MalformedReportError,
    PayloadTooLargeError,
    ReportRejectedError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from services.gateway._intake import decode_json, decode_ndjson
from services.gateway._metrics import Metrics
from services.gateway._openapi import (
    NDJSON_MEDIA_TYPES,
    AcceptedBody,
    BatchBody,
    HealthBody,
    ReadyBody,
    StatusBody,
    problem_responses,
)
from services.gateway._pipeline import Status
from services.gateway._problems import problem_body
from services.gateway._results import Accepted
from services.gateway._service import GatewayService
from services.gateway._tokens import Caller

log = get_logger(__name__)
JSON = "application/json"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Names this request: a retry with the same key gets the first answer and "
    "writes nothing (within the idempotency window).",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
_TRACEPARENT_PARAMETER = {
    "name": "traceparent",
    "in": "header",
    "required": False,
    "description": "W3C trace context to continue.",
    "schema": {"type": "string"},
}

reports = APIRouter()
"""Publishing reports and asking where they went."""
operations = APIRouter()
"""Health, readiness and metrics, for the people who run the gateway."""

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token made by `oix gateway token create` for this agency.",
)


def child_traceparent(incoming: str | None) -> str:
    """A W3C traceparent for the report: the caller's trace with a new span, or a new trace."""
    match = _TRACEPARENT.fullmatch(incoming.strip()) if incoming else None
    if match is None or match[1] == "ff" or set(match[2]) == {"0"}:
        return new_traceparent()
    # A span id must be unique, not secret: the PRNG spares a system call per report.
    return f"00-{match[2]}-{random.getrandbits(64) | 1:016x}-{match[4]}"


def service_of(request: Request) -> GatewayService:
    """The gateway service whose application answers ``request``."""
    service: GatewayService = request.app.state.service
    return service


def refuse(service: GatewayService, error: GatewayError) -> GatewayError:
    """Count a refused publish request that never reached the pipeline."""
    service.metrics.rejected.labels(error.code).inc()
    log.info("request refused", code=error.code, detail=error.detail)
    return error


def authenticate(service: GatewayService, token: str | None) -> Caller:
    """The agency system a bearer token names, if it may publish through this gateway.

    Raises:
        UnauthorizedError: no token, or one the gateway does not know.
        ForbiddenError: the token is another agency's.
    """
    if not token:
        raise UnauthorizedError("a bearer token is required: Authorization: Bearer <token>")
    caller = service.tokens.lookup(token)
    if caller is None:
        raise UnauthorizedError("the bearer token is not valid for this gateway")
    if caller.agency != service.agency:
        raise ForbiddenError(
            f"token {caller.name!r} publishes for {caller.agency}; this gateway publishes "
            f"for {service.agency} only",
        )
    return caller


def _publisher(service: GatewayService, request: Request) -> Caller:
    # Read by hand, not through FastAPI's dependency injection: this runs for
    # every report, and the injection costs more than the check itself.
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        return authenticate(service, token.strip() if scheme.lower() == "bearer" else None)
    except GatewayError as error:
        raise refuse(service, error) from None


async def _reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Caller:
    token = credentials.credentials if credentials is not None else None
    return authenticate(service_of(request), token)


def _idempotency_key(service: GatewayService, request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise refuse(
            service,
            ReportRejectedError(
                "the Idempotency-Key header is not valid",
                [
                    FieldIssue(
                        "Idempotency-Key (header)",
                        "1 to 255 printable ASCII characters, no spaces",
                    )
                ],
            ),
        )
    return key


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, all of it within ``timeout`` seconds.

    Raises:
        PayloadTooLargeError: the body is over ``limit``.
        RequestTimeoutError: it did not arrive in time (a stalled or slow client
            must not hold a connection: see :mod:`._connections`).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"the body is {declared} bytes; this endpoint takes at most {limit}"
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"the body is over {limit} bytes, the most this endpoint takes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the body did not arrive within {timeout:g} s ({size} bytes came); send it whole "
            "without pausing"
        ) from None
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def is_json(media_type: str) -> bool:
    """JSON by its media type, or none given."""
    return media_type in {"", JSON} or media_type.endswith("+json")


@reports.post(
    "/v1/reports",
    status_code=201,
    tags=["reports"],
    summary="Publish one report",
    response_model=None,
    openapi_extra={
        "security": [{"bearer": []}],
        "parameters": [_IDEMPOTENCY_KEY_PARAMETER, _TRACEPARENT_PARAMETER],
    },
    responses={
        201: {"model": AcceptedBody, "description": "Acknowledged by the broker."},
        **problem_responses(400, 401, 403, 408, 409, 413, 415, 422, 503),
    },
)
async def publish_report(request: Request) -> Response:
    """Validate, sign and publish one report; answers once the broker acknowledged it."""
    service = service_of(request)
    _publisher(service, request)
    idempotency_key = _idempotency_key(service, request)
    traceparent = request.headers.get("traceparent")
    media_type = _media_type(request)
    if not is_json(media_type):
        raise refuse(service, UnsupportedMediaTypeError(f"send application/json, not {media_type}"))
    try:
        gateway = service.gateway
        body = await read_body(request, gateway.max_body_bytes, gateway.body_timeout)
        data = decode_json(body)
    except GatewayError as error:
        raise refuse(service, error) from None
    submission = Submission(data, idempotency_key, child_traceparent(traceparent))
    accepted = await service.pipeline.publish(submission)
    return Response(orjson.dumps(accepted.as_json()), status_code=201, media_type=JSON)


@reports.post(
    "/v1/reports:batch",
    tags=["reports"],
    summary="Publish many reports (JSON array or NDJSON)",
    response_model=None,
    openapi_extra={"security": [{"bearer": []}], "parameters": [_TRACEPARENT_PARAMETER]},
    responses={
        200: {
            "model": BatchBody,
            "description": "Per report: accepted with its coordinates, or refused with "
            "the reasons. Check every item; a Retry-After header means some got 503.",
        },
        **problem_responses(400, 401, 403, 408, 413, 415),
    },
)
async def publish_batch(request: Request) -> Response:
    """Publish every valid report of the batch; invalid ones never hold the others back."""
    service = service_of(request)
    gateway = service.gateway
    _publisher(service, request)
    traceparent = request.headers.get("traceparent")
    try:
        items = batch_items(
            _media_type(request),
            await read_body(request, gateway.max_batch_bytes, gateway.body_timeout),
            request.headers.get("idempotency-key"),
            gateway.max_batch_items,
        )
    except GatewayError as error:
        raise refuse(service, error) from None
    # One trace for the request, a span per report: the request's traceparent
    # is checked once here, not once per report.
    trace = child_traceparent(traceparent)
    head, tail = trace[:36], trace[52:]  # "00-<trace id>-", "-<flags>"
    outcomes = await service.pipeline.publish_many(
        [
            Submission(item, None, f"{head}{random.getrandbits(64) | 1:016x}{tail}")
            for item in items
        ],
    )
    results: list[dict[str, Any]] = []
    accepted = 0
    retry_after: int | None = None
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Accepted):
            accepted += 1
            results.append({"index": index, "status": 201, "accepted": outcome.as_json()})
            continue
        if isinstance(outcome, ServiceUnavailableError):
            retry_after = outcome.retry_after
        results.append(
            {"index": index, "status": outcome.status, "problem": problem_body(outcome)},
        )
    body = {"accepted": accepted, "rejected": len(outcomes) - accepted, "results": results}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(orjson.dumps(body), media_type=JSON, headers=headers)


def batch_items(media_type: str, body: bytes, idempotency_key: str | None, limit: int) -> list[Any]:
    """The reports of a batch body: a JSON array or NDJSON, at most ``limit`` of them.

    Raises:
        GatewayError: an Idempotency-Key on a batch, a body that is neither, or too many.
    """
    if idempotency_key is not None:
        raise MalformedReportError(
            "Idempotency-Key names one request of one report; in a batch give each report "
            "its own header.message_id to retry it safely",
        )
    if media_type in NDJSON_MEDIA_TYPES:
        items = decode_ndjson(body)
    elif is_json(media_type):
        data = decode_json(body)
        if not isinstance(data, list):
            raise MalformedReportError("a JSON batch is an array of reports (or send NDJSON)")
        items = data
    else:
        raise UnsupportedMediaTypeError(
            f"send a JSON array (application/json) or NDJSON (application/x-ndjson), "
            f"not {media_type}",
        )
    if not items:
        raise MalformedReportError("the batch holds no reports")
    if len(items) > limit:
        raise PayloadTooLargeError(
            f"the batch holds {len(items)} reports; at most {limit} per request"
        )
    return items


@reports.get(
    "/v1/reports/{message_id}/status",
    tags=["reports"],
    summary="Where a report went and which partners acknowledged it",
    response_model=None,
    responses={200: {"model": StatusBody}, **problem_responses(401, 403, 404, 422)},
)
async def report_status(
    request: Request,
    message_id: str,
    _caller: Annotated[Caller, Depends(_reader)],
) -> Response:
    """The report's coordinates, and partners' Acknowledgement messages read from the bus."""
    try:
        canonical = str(uuid.UUID(message_id))
    except ValueError:
        raise ReportRejectedError(
            "message_id is not a UUID",
            [FieldIssue("message_id", f"{message_id!r} is not a UUID")],
        ) from None
    status = service_of(request).pipeline.status(canonical)
    return Response(orjson.dumps(status_body(status)), media_type=JSON)


def status_body(status: Status) -> dict[str, Any]:
    """The answer of ``GET /v1/reports/{message_id}/status``."""
    body = status.accepted.as_json()
    body |= {
        "event_id": status.accepted.event_id,
        "releasable_to": list(status.accepted.releasable_to),
        "acknowledgements": [
            {
                "party": a.party,
                "status": a.status,
                "ack_message_id": a.ack_message_id,
                "claimed_at": a.created_at,
                "observed_at": a.observed_at,
                "note": a.note,
                "topic": a.delivery.topic,
                "partition": a.delivery.partition,
                "offset": a.delivery.offset,
            }
            for a in status.acknowledgements
        ],
        "awaiting": status.awaiting,
    }
    return body


@operations.get("/healthz", tags=["operations"], response_model=HealthBody)
async def healthz(request: Request) -> Response:
    """The process is up (says nothing about the broker: see /readyz)."""
    agency = service_of(request).agency
    return Response(orjson.dumps({"status": "ok", "agency": agency}), media_type=JSON)


@operations.get(
    "/readyz",
    tags=["operations"],
    response_model=ReadyBody,
    responses={503: {"model": ReadyBody, "description": "Not ready: see problems."}},
)
async def readyz(request: Request) -> Response:
    """Ready to accept reports: not stopping, and the broker answers."""
    service = service_of(request)
    problems = []
    if service.draining:
        problems.append("the gateway is shutting down")
    broker = await service.broker_problem()
    if broker is not None:
        problems.append(broker)
    body = {"status": "not ready" if problems else "ready", "agency": service.agency}
    body_json = orjson.dumps({**body, "problems": problems})
    return Response(body_json, status_code=503 if problems else 200, media_type=JSON)


@operations.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {Metrics.content_type: {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics: accepted, rejected by reason, latency to the broker's ack."""
    metrics = service_of(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)
