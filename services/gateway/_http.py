"""The HTTP front door: FastAPI routes over the publish pipeline.

Handlers read the body themselves (size limit before anything else, then JSON,
then the pipeline's validation) and answer with orjson-encoded bodies; the
pydantic models in :mod:`._openapi` describe the answers for the OpenAPI
document without costing a validation per request.
"""

import random
import re
import uuid
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.bus import FieldIssue, get_logger, new_traceparent
from services.gateway._errors import (
    ForbiddenError,
    GatewayError,
    MalformedReportError,
    PayloadTooLargeError,
    ReportRejectedError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from services.gateway._intake import decode_json, decode_ndjson
from services.gateway._openapi import (
    NDJSON_MEDIA_TYPES,
    PROBLEM_MEDIA_TYPE,
    AcceptedBody,
    BatchBody,
    HealthBody,
    ReadyBody,
    StatusBody,
    examples_for,
    problem_responses,
    report_schemas,
)
from services.gateway._pipeline import Status, Submission
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
_DESCRIPTION = """\
Agency systems publish reports to the OIX bus here, as JSON. One gateway
serves one agency: it validates each report, fills the header fields left
out, signs it with the agency's key, routes it as the agreement says and
answers only after the broker acknowledged it (acks=all).

Authenticate with `Authorization: Bearer <token>` (tokens come from
`oix gateway token create`). Retry safely with the same `header.message_id`
or the same `Idempotency-Key`: the first answer comes back, nothing is written
twice. A 503 means the broker did not acknowledge in time: retry after
`Retry-After` seconds with the same message id.
"""


def child_traceparent(incoming: str | None) -> str:
    """A W3C traceparent for the report: the caller's trace with a new span, or a new trace."""
    match = _TRACEPARENT.fullmatch(incoming.strip()) if incoming else None
    if match is None or match[1] == "ff" or set(match[2]) == {"0"}:
        return new_traceparent()
    # A span id must be unique, not secret: the PRNG spares a system call per report.
    return f"00-{match[2]}-{random.getrandbits(64) | 1:016x}-{match[4]}"


def problem(error: GatewayError) -> Response:
    """The RFC 9457 answer for ``error``."""
    headers: dict[str, str] = {}
    if isinstance(error, ServiceUnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="oix-gateway"'
    return Response(
        orjson.dumps(_problem_body(error)),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _problem_body(error: GatewayError) -> dict[str, Any]:
    return {
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "issues": [{"path": i.path, "reason": i.reason} for i in error.issues],
        "message_id": error.message_id,
    }


def _status_body(status: Status) -> dict[str, Any]:
    body = status.accepted.as_json()
    body |= {
        "event_id": status.accepted.event_id,
        "releasable_to": list(status.accepted.releasable_to),
        "acknowledgements": [
            {
                "party": a.party,
                "status": a.status,
                "ack_message_id": a.ack_message_id,
                "acknowledged_at": a.created_at,
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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"the body is {declared} bytes; this endpoint takes at most {limit}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"the body is over {limit} bytes, the most this endpoint takes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type in {"", JSON} or media_type.endswith("+json")


def create_app(service: GatewayService) -> FastAPI:  # noqa: C901, PLR0915  # one closure per route
    """The FastAPI application of a started gateway service."""
    gateway = service.gateway
    agency = service.agency
    metrics = service.metrics
    app = FastAPI(
        title=f"OIX gateway for {agency}",
        version="1",
        description=_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="bearer",
        description="A token made by `oix gateway token create` for this agency.",
    )

    def refuse(error: GatewayError) -> GatewayError:
        """Count a refused publish request that never reached the pipeline."""
        metrics.rejected.labels(error.code).inc()
        log.info("request refused", code=error.code, detail=error.detail)
        return error

    def authenticate(token: str | None) -> Caller:
        if not token:
            raise UnauthorizedError("a bearer token is required: Authorization: Bearer <token>")
        caller = service.tokens.lookup(token)
        if caller is None:
            raise UnauthorizedError("the bearer token is not valid for this gateway")
        if caller.agency != agency:
            raise ForbiddenError(
                f"token {caller.name!r} publishes for {caller.agency}; this gateway publishes "
                f"for {agency} only",
            )
        return caller

    def publisher(request: Request) -> Caller:
        # Read by hand, not through FastAPI's dependency injection: this runs for
        # every report, and the injection costs more than the check itself.
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            return authenticate(token.strip() if scheme.lower() == "bearer" else None)
        except GatewayError as error:
            raise refuse(error) from None

    def idempotency_key_of(request: Request) -> str | None:
        key = request.headers.get("idempotency-key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise refuse(
                ReportRejectedError(
                    "the Idempotency-Key header is not valid",
                    [
                        FieldIssue(
                            "Idempotency-Key (header)",
                            "1 to 255 printable ASCII characters, no spaces",
                        )
                    ],
                )
            )
        return key

    async def reader(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Caller:
        return authenticate(credentials.credentials if credentials is not None else None)

    @app.exception_handler(GatewayError)
    async def on_gateway_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, GatewayError)
        return problem(error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        issues = []
        for item in error.errors():
            where, *rest = [str(part) for part in item["loc"]]
            issues.append(FieldIssue(f"{'.'.join(rest)} ({where})", str(item["msg"])))
        return problem(ReportRejectedError("the request is not valid", issues))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, error: Exception) -> Response:
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

    @app.post(
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
            **problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
        },
    )
    async def publish_report(request: Request) -> Response:
        """Validate, sign and publish one report; answers once the broker acknowledged it."""
        publisher(request)
        idempotency_key = idempotency_key_of(request)
        traceparent = request.headers.get("traceparent")
        media_type = _media_type(request)
        if not _is_json(media_type):
            raise refuse(UnsupportedMediaTypeError(f"send application/json, not {media_type}"))
        try:
            data = decode_json(await _read_body(request, gateway.max_body_bytes))
        except GatewayError as error:
            raise refuse(error) from None
        submission = Submission(data, idempotency_key, child_traceparent(traceparent))
        accepted = await service.pipeline.publish(submission)
        return Response(orjson.dumps(accepted.as_json()), status_code=201, media_type=JSON)

    @app.post(
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
            **problem_responses(400, 401, 403, 413, 415),
        },
    )
    async def publish_batch(request: Request) -> Response:
        """Publish every valid report of the batch; invalid ones never hold the others back."""
        publisher(request)
        traceparent = request.headers.get("traceparent")
        try:
            items = _batch_items(
                _media_type(request),
                await _read_body(request, gateway.max_batch_bytes),
                request.headers.get("idempotency-key"),
                gateway.max_batch_items,
            )
        except GatewayError as error:
            raise refuse(error) from None
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
                {"index": index, "status": outcome.status, "problem": _problem_body(outcome)},
            )
        body = {"accepted": accepted, "rejected": len(outcomes) - accepted, "results": results}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return Response(orjson.dumps(body), media_type=JSON, headers=headers)

    @app.get(
        "/v1/reports/{message_id}/status",
        tags=["reports"],
        summary="Where a report went and which partners acknowledged it",
        response_model=None,
        responses={200: {"model": StatusBody}, **problem_responses(401, 403, 404, 422)},
    )
    async def report_status(
        message_id: str,
        _caller: Annotated[Caller, Depends(reader)],
    ) -> Response:
        """The report's coordinates, and partners' Acknowledgement messages read from the bus."""
        try:
            canonical = str(uuid.UUID(message_id))
        except ValueError:
            raise ReportRejectedError(
                "message_id is not a UUID",
                [FieldIssue("message_id", f"{message_id!r} is not a UUID")],
            ) from None
        status = service.pipeline.status(canonical)
        return Response(orjson.dumps(_status_body(status)), media_type=JSON)

    @app.get("/healthz", tags=["operations"], response_model=HealthBody)
    async def healthz() -> Response:
        """The process is up (says nothing about the broker: see /readyz)."""
        return Response(orjson.dumps({"status": "ok", "agency": agency}), media_type=JSON)

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=ReadyBody,
        responses={503: {"model": ReadyBody, "description": "Not ready: see problems."}},
    )
    async def readyz() -> Response:
        """Ready to accept reports: not stopping, and the broker answers."""
        problems = []
        if service.draining:
            problems.append("the gateway is shutting down")
        broker = await service.broker_problem()
        if broker is not None:
            problems.append(broker)
        body = {"status": "not ready" if problems else "ready", "agency": agency}
        body_json = orjson.dumps({**body, "problems": problems})
        return Response(body_json, status_code=503 if problems else 200, media_type=JSON)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {metrics.content_type: {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: accepted, rejected by reason, latency to the broker's ack."""
        return Response(metrics.render(), media_type=metrics.content_type)

    def openapi() -> dict[str, Any]:
        # Rebuilt per request: the examples carry present-day times.
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(report_schemas())
        report = {"$ref": "#/components/schemas/Report"}
        examples = examples_for(service.exchange, agency)
        schema["paths"]["/v1/reports"]["post"]["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": report, "examples": examples}},
        }
        batch_example = [e["value"] for e in examples.values()]
        schema["paths"]["/v1/reports:batch"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                JSON: {
                    "schema": {"type": "array", "items": report, "minItems": 1},
                    "example": batch_example,
                },
                NDJSON_MEDIA_TYPES[0]: {
                    "schema": {"type": "string", "description": "One report (JSON) per line."},
                    "example": "\n".join(orjson.dumps(v).decode() for v in batch_example),
                },
            },
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app


def _batch_items(
    media_type: str, body: bytes, idempotency_key: str | None, limit: int
) -> list[Any]:
    if idempotency_key is not None:
        raise MalformedReportError(
            "Idempotency-Key names one request of one report; in a batch give each report "
            "its own header.message_id to retry it safely",
        )
    if media_type in NDJSON_MEDIA_TYPES:
        items = decode_ndjson(body)
    elif _is_json(media_type):
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
