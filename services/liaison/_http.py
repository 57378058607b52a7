"""The liaison API (FastAPI): what officers read, and what they send back.

Sessions, events, reports, requests, summaries, alerts, webhooks, the live
stream, acknowledgements and answers, and operations.

Every route but sign-in and operations needs a session: a bearer token
(``Authorization: Bearer oixls_…``) or the console's cookie, with the CSRF
token echoed in ``X-CSRF-Token`` on every state-changing request. Every
query is scoped by the session's agency. Errors are RFC 9457 problem
details, as the gateway answers.
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.bus import AckStatus, FieldIssue, get_logger
from services.liaison._auth import new_token, token_hash
from services.liaison._errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PublishingError,
    UnauthorizedError,
)
from services.liaison._models import (
    Alert,
    Capability,
    DailySummary,
    DeadLetter,
    EventDetail,
    EventSummary,
    Link,
    Login,
    Outgoing,
    Page,
    PartitionState,
    Replies,
    ReportDetail,
    ReportSummary,
    ServiceStatus,
    SessionInfo,
    TokenInfo,
    WebhookEndpoint,
    iso,
)
from services.liaison._service import LiaisonService
from services.liaison._store import now_ms
from services.liaison._stream import stream_events
from services.liaison._views import (
    EventQuery,
    ReportQuery,
    changes_between,
    event_summary,
    report_detail,
)

log = get_logger(__name__)
JSON = "application/json"
PROBLEM = "application/problem+json"
COOKIE = "oix_liaison_session"
CSRF_HEADER = "X-CSRF-Token"
_AGENCY = r"^[A-Z]{2}-[A-Z0-9]{2,12}$"
_UUID = r"^[0-9a-fA-F-]{32,36}$"
_CURSOR = re.compile(r"^\d{1,18}$")
_SAFE = {"GET", "HEAD", "OPTIONS"}
RETRY_MS = 2000
"""How long a browser waits before it reconnects a dropped stream."""

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from POST /v1/tokens (API clients, `oix feed`).",
)
cookie = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    scheme_name="cookie",
    description="The console's session cookie from POST /v1/session (send X-CSRF-Token too).",
)


class Problem(BaseModel):
    """Why a request was not carried out (RFC 9457 problem details)."""

    title: str
    status: int
    detail: str
    code: str
    issues: list[dict[str, str]] = Field(description="Every failing field: path and reason.")


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers a route may give."""
    return {
        code: {"model": Problem, "content": {PROBLEM: {}}, "description": "Problem details."}
        for code in codes
    }


def _problem(error: ApiError) -> Response:
    body = {
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "issues": [{"path": i.path, "reason": i.reason} for i in error.issues],
    }
    headers = {"WWW-Authenticate": 'Bearer realm="oix-liaison"'} if error.status == 401 else None  # noqa: PLR2004
    if error.status == 503:  # noqa: PLR2004
        headers = {"Retry-After": "5"}
    return Response(
        orjson.dumps(body), status_code=error.status, media_type=PROBLEM, headers=headers
    )


async def _on_api_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return _problem(error)


async def _on_invalid(_: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    issues = []
    for item in error.errors():
        where, *rest = [str(part) for part in item["loc"]] or ["request"]
        issues.append(FieldIssue(f"{'.'.join(rest)} ({where})", str(item["msg"])))
    return _problem(InvalidRequestError("the request is not valid", issues))


async def _on_http(_: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    body: dict[str, Any] = {
        "title": "Not found" if error.status_code == 404 else "Request refused",  # noqa: PLR2004
        "status": error.status_code,
        "detail": str(error.detail),
        "code": "not_found" if error.status_code == 404 else "http_error",  # noqa: PLR2004
        "issues": [],
    }
    return Response(
        orjson.dumps(body),
        status_code=error.status_code,
        media_type=PROBLEM,
        headers=getattr(error, "headers", None),
    )


def service_of(request: Request) -> LiaisonService:
    """The service whose application answers ``request``."""
    service: LiaisonService = request.app.state.service
    return service


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: an officer of an agency, and how the session was presented."""

    agency: str
    officer: str
    via: str
    csrf: str
    token_sha256: str
    expires_at: int


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    session_cookie: Annotated[str | None, Security(cookie)],
) -> Caller:
    service = service_of(request)
    if credentials is not None:
        token, via = credentials.credentials, "bearer"
    elif session_cookie:
        token, via = session_cookie, "cookie"
    else:
        raise UnauthorizedError(
            "sign in first: a bearer token (POST /v1/tokens) or the console's session cookie"
        )
    digest = token_hash(token)
    row = await service.store.session(digest)
    if row is None:
        raise UnauthorizedError("the session is not valid (expired, signed out, or unknown)")
    if row.agency != service.agency:
        raise ForbiddenError(
            f"this session is {row.agency}'s; this liaison service serves {service.agency} only"
        )
    if via == "cookie" and request.method not in _SAFE:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), str(row.csrf).encode()):
            raise ForbiddenError(
                f"a cookie session must send its CSRF token in {CSRF_HEADER} (GET /v1/session)"
            )
    return Caller(row.agency, row.officer, via, row.csrf, digest, row.expires_at)


Officer = Annotated[Caller, Depends(_caller)]

sessions = APIRouter(tags=["session"])
reading = APIRouter(tags=["events"])
acting = APIRouter(tags=["acknowledge and answer"])
operations = APIRouter(tags=["operations"])


async def _signed_in(service: LiaisonService, login: Login, via: str) -> tuple[str, dict[str, Any]]:
    if not await service.officers.verify(service.agency, login.name, login.password):
        raise UnauthorizedError(f"wrong name or password for an officer of {service.agency}")
    token = new_token()
    at = now_ms()
    row = {
        "token_sha256": token_hash(token),
        "agency": service.agency,
        "officer": login.name,
        "via": via,
        "csrf": new_token().removeprefix("oixls_"),
        "created_at": at,
        "expires_at": at + int(service.liaison.session_hours * 3_600_000),
    }
    await service.store.create_session(row)
    log.info("officer signed in", agency=service.agency, officer=login.name, via=via)
    return token, row


@sessions.post(
    "/v1/session",
    summary="Sign in (the console): sets the session cookie",
    response_model=SessionInfo,
    responses=problems(400, 401, 422),
)
async def sign_in(request: Request, login: Login) -> Response:
    """Check the officer's password; answer with a HttpOnly, SameSite=Strict session cookie."""
    service = service_of(request)
    token, row = await _signed_in(service, login, "cookie")
    info = SessionInfo(
        agency=row["agency"],
        officer=row["officer"],
        via="cookie",
        expires_at=iso(row["expires_at"]) or "",
        csrf_token=row["csrf"],
    )
    response = Response(info.model_dump_json(), media_type=JSON)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(service.liaison.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=service.liaison.cookie_secure,
        path="/",
    )
    return response


@sessions.post(
    "/v1/tokens",
    status_code=201,
    summary="Sign in (API clients, `oix feed`): a bearer token",
    response_model=TokenInfo,
    responses=problems(400, 401, 422),
)
async def create_token(request: Request, login: Login) -> TokenInfo:
    """Check the officer's password; answer with a bearer token (shown once)."""
    token, row = await _signed_in(service_of(request), login, "bearer")
    return TokenInfo(
        token=token,
        agency=row["agency"],
        officer=row["officer"],
        expires_at=iso(row["expires_at"]) or "",
    )


@sessions.get(
    "/v1/session",
    summary="Who is signed in",
    response_model=SessionInfo,
    responses=problems(401, 403),
)
async def whoami(caller: Officer) -> SessionInfo:
    """The session's officer and agency, and (for a cookie session) its CSRF token."""
    return SessionInfo(
        agency=caller.agency,
        officer=caller.officer,
        via="cookie" if caller.via == "cookie" else "bearer",
        expires_at=iso(caller.expires_at) or "",
        csrf_token=caller.csrf if caller.via == "cookie" else None,
    )


@sessions.delete("/v1/session", status_code=204, summary="Sign out", responses=problems(401, 403))
async def sign_out(request: Request, caller: Officer) -> Response:
    """End the session (cookie or bearer token)."""
    await service_of(request).store.end_session(caller.token_sha256)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response


def _list(value: str | None, what: str, pattern: str | None = None) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    if pattern is not None:
        for item in items:
            if not re.fullmatch(pattern, item):
                raise InvalidRequestError(
                    f"{what} is not valid",
                    [FieldIssue(f"{what} (query)", f"{item!r} is not valid")],
                )
    return items


def _ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp() * 1000)
    except (OverflowError, ValueError):
        raise InvalidRequestError(
            "a time is out of range", [FieldIssue("since/until (query)", "out of range")]
        ) from None


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not _CURSOR.fullmatch(value):
        raise InvalidRequestError(
            "the cursor is not valid", [FieldIssue("cursor (query)", "use next_cursor as given")]
        )
    return int(value)


Partner = Annotated[
    str | None,
    Query(description="Originating agencies, comma-separated (LT-VSAT,PL-SG).", max_length=500),
]
ReportType = Annotated[
    str | None, Query(alias="type", description="Report types, comma-separated.", max_length=500)
]
Impact = Annotated[
    str | None, Query(description="LOW, MEDIUM, HIGH, VERY_HIGH (comma-separated).", max_length=100)
]
Section = Annotated[
    str | None, Query(description="Border sections, comma-separated.", max_length=500)
]
ModeFilter = Annotated[
    str | None, Query(description="ACTUAL, EXERCISE, TEST (comma-separated).", max_length=100)
]
Since = Annotated[datetime | None, Query(description="From (ISO 8601, included).")]
Until = Annotated[datetime | None, Query(description="Until (ISO 8601, excluded).")]
Text = Annotated[
    str | None, Query(alias="q", description="Free text, in titles and narratives.", max_length=200)
]
Cursor = Annotated[str | None, Query(description="next_cursor of the page before.", max_length=20)]
Limit = Annotated[int, Query(ge=1, le=500)]

_TYPE = r"^[A-Za-z]{1,40}$"
_IMPACT = r"^(LOW|MEDIUM|HIGH|VERY_HIGH)$"
_MODE = r"^(ACTUAL|EXERCISE|TEST)$"
_SECTION = r"^[A-Z0-9][A-Z0-9-]{1,63}$"


@reading.get(
    "/v1/events",
    summary="Events, newest change first, with filters and cursor pagination",
    response_model=Page[EventSummary],
    responses=problems(401, 403, 422),
)
async def list_events(
    request: Request,
    caller: Officer,
    *,
    partner: Partner = None,
    report_type: ReportType = None,
    impact: Impact = None,
    section: Section = None,
    mode: ModeFilter = None,
    status: Annotated[str | None, Query(pattern="^(active|withdrawn)$")] = None,
    since: Since = None,
    until: Until = None,
    text: Text = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[EventSummary]:
    """The events released to the officer's agency that match every filter given."""
    query = EventQuery(
        partners=_list(partner, "partner", _AGENCY),
        types=_list(report_type, "type", _TYPE),
        impacts=_list(impact, "impact", _IMPACT),
        sections=_list(section, "section", _SECTION),
        modes=_list(mode, "mode", _MODE),
        status=status,
        since=_ms(since),
        until=_ms(until),
        text=text or None,
        cursor=_cursor(cursor),
        limit=limit,
    )
    return await service_of(request).views.events(caller.agency, query, now_ms())


@reading.get(
    "/v1/events/{originator}/{event_id}",
    summary="One event: every report version, the changes between them, links, acknowledgements",
    response_model=EventDetail,
    responses=problems(401, 403, 404, 422),
)
async def event_detail(
    request: Request,
    caller: Officer,
    originator: Annotated[str, Path(pattern=_AGENCY, description="The originating agency.")],
    event_id: Annotated[str, Path(pattern=_UUID, description="An event id (UUID).")],
) -> EventDetail:
    """The full event; 404 when it is not visible to the officer's agency."""
    service = service_of(request)
    views = service.views
    found = await views.event_reports(caller.agency, originator, _canonical(event_id))
    if found is None:
        raise NotFoundError(f"no event {originator}/{event_id} is visible to {caller.agency}")
    links_by_message: dict[str, list[Any]] = {}
    for row in found.link_rows:
        links_by_message.setdefault(row.message_id, []).append(row)
    reports = []
    previous: dict[str, dict[str, Any]] = {}
    contents = {r.message_id: orjson.loads(r.content) for r in found.reports}
    for row in found.reports:
        content = contents[row.message_id]
        superseded = [
            link.target_id
            for link in links_by_message.get(row.message_id, [])
            if link.relation == "SUPERSEDES"
        ]
        before = next(
            (contents[t] for t in superseded if t in contents), previous.get(row.report_type)
        )
        changes = changes_between(before, content) if before is not None else []
        previous[row.report_type] = content
        link_list = [
            Link(
                relation=link.relation,
                message_id=link.target_id,
                known=link.target_id in found.known,
            )
            for link in links_by_message.get(row.message_id, [])
        ]
        reports.append(report_detail(row, link_list, changes))
    event = event_summary(found.event, now_ms())
    return EventDetail(
        event=event,
        reports=reports,
        acknowledgements=found.acknowledgements,
        responses=found.responses,
        answers=found.answers,
        can_acknowledge=_can_acknowledge(service, event),
        can_answer=_can_answer(service, event),
    )


def _can_publish(service: LiaisonService, report_type: str, to: str) -> str | None:
    if service.gateway is None:
        return "this liaison service has no gateway to publish through (OIX_LIAISON_GATEWAY_URL)"
    try:
        service.exchange.router.topics_for(report_type, service.agency, [to])
    except Exception as exc:  # noqa: BLE001  # a RoutingError or AgreementError says why
        return str(exc)
    return None


def _can_acknowledge(service: LiaisonService, event: EventSummary) -> Capability:
    reason = _can_publish(service, "Acknowledgement", event.originator)
    return Capability(allowed=reason is None, reason=reason)


def _can_answer(service: LiaisonService, event: EventSummary) -> Capability:
    reason = None
    if event.request is None:
        reason = f"not a request addressed to {service.agency}"
    elif event.status != "active":
        reason = "the request was withdrawn"
    else:
        answer_type = (
            "AssistanceResponse" if event.request.kind == "assistance" else "IncidentReport"
        )
        reason = _can_publish(service, answer_type, event.originator)
    return Capability(allowed=reason is None, reason=reason)


Originator = Annotated[str, Path(pattern=_AGENCY, description="The originating agency.")]
MessageId = Annotated[str, Path(pattern=_UUID, description="A message id (UUID).")]


@reading.get(
    "/v1/reports",
    summary="Reports (messages) in the order they were stored, with filters; the terminal feed",
    response_model=Page[ReportSummary],
    responses=problems(401, 403, 422),
)
async def list_reports(
    request: Request,
    caller: Officer,
    *,
    partner: Partner = None,
    report_type: ReportType = None,
    impact: Impact = None,
    section: Section = None,
    mode: ModeFilter = None,
    since: Since = None,
    until: Until = None,
    text: Text = None,
    cursor: Cursor = None,
    limit: Limit = 50,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> Page[ReportSummary]:
    """Reports released to the officer's agency; ``order=asc`` pages forward (oldest first)."""
    query = ReportQuery(
        partners=_list(partner, "partner", _AGENCY),
        types=_list(report_type, "type", _TYPE),
        impacts=_list(impact, "impact", _IMPACT),
        sections=_list(section, "section", _SECTION),
        modes=_list(mode, "mode", _MODE),
        since=_ms(since),
        until=_ms(until),
        text=text or None,
        cursor=_cursor(cursor),
        limit=limit,
        ascending=order == "asc",
    )
    return await service_of(request).views.reports(caller.agency, query)


@reading.get(
    "/v1/reports/{originator}/{message_id}",
    summary="One report with its content, links and signature",
    response_model=ReportDetail,
    responses=problems(401, 403, 404, 422),
)
async def report_view(
    request: Request, caller: Officer, originator: Originator, message_id: MessageId
) -> ReportDetail:
    """One report; 404 when it is not visible to the officer's agency."""
    views = service_of(request).views
    row = await views.report(caller.agency, originator, _canonical(message_id))
    if row is None:
        raise NotFoundError(f"no report {originator}/{message_id} is visible to {caller.agency}")
    link_list = await views.report_links(caller.agency, originator, row.message_id)
    return report_detail(row, link_list, [])


def _canonical(message_id: str) -> str:
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        raise InvalidRequestError(
            "not a UUID", [FieldIssue("message_id (path)", f"{message_id!r} is not a UUID")]
        ) from None


@reading.get(
    "/v1/requests",
    summary="Requests addressed to this agency, soonest due first, with their due time",
    response_model=list[EventSummary],
    responses=problems(401, 403, 422),
)
async def list_requests(
    request: Request,
    caller: Officer,
    state: Annotated[str, Query(pattern="^(open|answered|all)$")] = "open",
) -> list[EventSummary]:
    """Requests for assistance and for information to this agency; ``request.overdue`` flags."""
    return await service_of(request).views.requests(caller.agency, state, now_ms())


@reading.get(
    "/v1/replies/{message_id}",
    summary="What partners answered to one of this agency's own messages",
    response_model=Replies,
    responses=problems(401, 403, 422),
)
async def replies(request: Request, caller: Officer, message_id: MessageId) -> Replies:
    """Acknowledgements and responses referring to ``message_id``, and its gateway status."""
    service = service_of(request)
    canonical = _canonical(message_id)
    acks, responses, sent = await service.views.replies(caller.agency, canonical)
    status = await service.gateway.status(canonical) if service.gateway is not None else None
    return Replies(
        message_id=canonical,
        acknowledgements=acks,
        responses=responses,
        answers_sent=sent,
        gateway_status=status,
    )


@reading.get(
    "/v1/summary/daily",
    summary="Figures per partner and day (ACTUAL reports only; exercises counted apart)",
    response_model=list[DailySummary],
    responses=problems(401, 403, 422),
)
async def daily_summary(
    request: Request,
    caller: Officer,
    partner: Partner = None,
    since: Since = None,
    until: Until = None,
) -> list[DailySummary]:
    """Crossing attempts, apprehensions and asylum requests per partner and day (default 7 days)."""
    end = _ms(until) or now_ms() + 86_400_000
    start = _ms(since) or end - 8 * 86_400_000
    return await service_of(request).views.summary(
        caller.agency, start, end, _list(partner, "partner", _AGENCY)
    )


@reading.get(
    "/v1/alerts",
    summary="Alerts: untrusted records, policy violations, broker resets, dead letters",
    response_model=Page[Alert],
    responses=problems(401, 403, 422),
)
async def list_alerts(
    request: Request, caller: Officer, cursor: Cursor = None, limit: Limit = 50
) -> Page[Alert]:
    """Alerts, newest first."""
    return await service_of(request).views.alerts(caller.agency, _cursor(cursor), limit)


@reading.get(
    "/v1/webhooks",
    summary="The agency's webhook endpoints and their deliveries",
    response_model=list[WebhookEndpoint],
    responses=problems(401, 403),
)
async def list_webhooks(request: Request, caller: Officer) -> list[WebhookEndpoint]:
    """Configured endpoints (never their secrets) with delivery counts."""
    service = service_of(request)
    counts = await service.views.delivery_counts(caller.agency)
    return [
        WebhookEndpoint(
            name=e.name,
            url=e.url,
            owner=e.owner,
            report_types=list(e.report_types),
            pending=counts.get((e.name, "pending"), 0),
            delivered=counts.get((e.name, "delivered"), 0),
            dead=counts.get((e.name, "dead"), 0),
        )
        for e in service.endpoints
    ]


@reading.get(
    "/v1/webhooks/deliveries",
    summary="Webhook deliveries; status=dead is the dead-letter list",
    response_model=list[DeadLetter],
    responses=problems(401, 403, 422),
)
async def list_deliveries(
    request: Request,
    caller: Officer,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = "dead",
) -> list[DeadLetter]:
    """Deliveries, newest first."""
    return await service_of(request).views.deliveries(caller.agency, status)


@acting.post(
    "/v1/webhooks/deliveries/{delivery_id}/retry",
    status_code=202,
    summary="Try a dead-lettered delivery again",
    responses=problems(401, 403, 404, 422),
)
async def retry_delivery(
    request: Request,
    caller: Officer,
    delivery_id: Annotated[str, Path(pattern=_UUID)],
) -> Response:
    """Put a dead letter back in the queue with its attempts reset."""
    service = service_of(request)
    if not await service.store.retry_delivery(caller.agency, delivery_id.lower(), now_ms()):
        raise NotFoundError(f"no dead-lettered delivery {delivery_id}")
    service.signal.changed()
    service.queued.changed()
    log.info("dead letter retried", delivery_id=delivery_id, officer=caller.officer)
    return Response(status_code=202)


class AckBody(BaseModel):
    """An acknowledgement to publish."""

    status: AckStatus = Field(default=AckStatus.RECEIVED, description="RECEIVED, READ or ACTIONED.")
    note: str | None = Field(default=None, max_length=2000)


async def _target(service: LiaisonService, caller: Caller, originator: str, message_id: str) -> Any:
    row = await service.views.report(caller.agency, originator, _canonical(message_id))
    if row is None:
        raise NotFoundError(f"no report {originator}/{message_id} is visible to {caller.agency}")
    return row


async def _publish(
    service: LiaisonService, caller: Caller, target: Any, report: dict[str, Any], *, answered: bool
) -> Outgoing:
    if service.gateway is None:
        raise PublishingError(
            503, "this liaison service has no gateway to publish through (OIX_LIAISON_GATEWAY_URL)"
        )
    try:
        accepted = await service.gateway.publish(report)
    except PublishingError:
        service.metrics.published.labels(report["type"], "refused").inc()
        raise
    service.metrics.published.labels(report["type"], "accepted").inc()
    at = now_ms()
    status = (
        str(report.get("status") or report.get("decision") or report["type"])
        if report["type"] in {"Acknowledgement", "AssistanceResponse"}
        else report["type"]
    )
    row = {
        "message_id": str(accepted.get("message_id") or report["header"]["message_id"]),
        "report_type": report["type"],
        "target_originator": target.originator,
        "target_message_id": target.message_id,
        "target_event_id": target.event_id,
        "officer": caller.officer,
        "status": status,
        "created_at": at,
        "accepted": orjson.dumps(accepted).decode(),
    }
    await service.store.record_outgoing(
        caller.agency, row, (target.originator, target.event_id), answered=answered
    )
    service.signal.changed()
    return Outgoing(
        message_id=row["message_id"],
        report_type=row["report_type"],
        target_originator=row["target_originator"],
        target_message_id=row["target_message_id"],
        officer=row["officer"],
        status=status,
        created_at=iso(at) or "",
        accepted=accepted,
    )


def _header(service: LiaisonService, target: Any) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "originator": service.agency,
        "classification": target.classification,
        "tlp": target.tlp,
        "releasable_to": [target.originator],
        "links": [{"message_id": target.message_id, "relation": "RESPONDS_TO"}],
        "mode": target.mode,
        "priority": target.priority,
    }


@acting.post(
    "/v1/reports/{originator}/{message_id}/acknowledgements",
    status_code=201,
    summary="Acknowledge a report: published to its originator through the agency's gateway",
    response_model=Outgoing,
    responses=problems(400, 401, 403, 404, 409, 422, 502, 503),
)
async def acknowledge(
    request: Request,
    caller: Officer,
    originator: Originator,
    message_id: MessageId,
    body: AckBody,
) -> Outgoing:
    """Publish an Acknowledgement (RECEIVED, READ or ACTIONED) of the report to its originator."""
    service = service_of(request)
    target = await _target(service, caller, originator, message_id)
    if target.report_type == "Acknowledgement":
        raise ConflictError("an acknowledgement is not acknowledged")
    report: dict[str, Any] = {
        "type": "Acknowledgement",
        "header": _header(service, target),
        "acknowledged_message_id": target.message_id,
        "status": str(body.status),
    }
    if body.note:
        report["note"] = body.note
    return await _publish(service, caller, target, report, answered=False)


@acting.post(
    "/v1/reports/{originator}/{message_id}/answers",
    status_code=201,
    summary="Answer a request addressed to this agency, through the agency's gateway",
    response_model=Outgoing,
    responses=problems(400, 401, 403, 404, 409, 422, 502, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "description": "The answer's fields. For a request for assistance, an "
                        "AssistanceResponse (decision, officers_offered, specialities, equipment, "
                        "available_from, available_until, conditions, note); for a request for "
                        "information, any report with its `type`. The header is filled in: "
                        "originator, releasable_to (the requester), links (RESPONDS_TO), mode, "
                        "TLP and classification of the request; `header` entries given win.",
                        "example": {
                            "decision": "ACCEPT",
                            "officers_offered": 5,
                            "available_from": "2026-05-02T06:00:00Z",
                        },
                    }
                }
            },
        }
    },
)
async def answer(
    request: Request, caller: Officer, originator: Originator, message_id: MessageId
) -> Outgoing:
    """Publish the answer to a request for assistance or information, linked RESPONDS_TO it."""
    service = service_of(request)
    target = await _target(service, caller, originator, message_id)
    event = await service.views.event_row(caller.agency, target.originator, target.event_id)
    if (
        target.report_type not in {"AssistanceRequest", "RequestForInformation"}
        or event is None
        or event.request_kind is None
    ):
        raise ConflictError(
            f"{originator}/{message_id} is not a request addressed to {caller.agency}"
        )
    if event.status != "active":
        raise ConflictError("the request was withdrawn by its originator")
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError("the body is not JSON", [FieldIssue("body", str(exc))]) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(
            "the body is a JSON object", [FieldIssue("body", "not an object")]
        )
    default_type = "AssistanceResponse" if target.report_type == "AssistanceRequest" else None
    report_type = data.get("type", default_type)
    if not isinstance(report_type, str):
        raise InvalidRequestError(
            "an answer to a request for information names its report type",
            [FieldIssue("type", "required: the report type of the answer (e.g. IncidentReport)")],
        )
    given = data.get("header")
    header = _header(service, target)
    if isinstance(given, dict):
        header.update({k: v for k, v in given.items() if k not in {"originator", "message_id"}})
        links = header.get("links")
        wanted = {"message_id": target.message_id, "relation": "RESPONDS_TO"}
        if not isinstance(links, list):
            links = []
        if wanted not in links:
            links.append(wanted)
        header["links"] = links
    report = {**data, "type": report_type, "header": header}
    return await _publish(service, caller, target, report, answered=True)


@reading.get(
    "/v1/stream",
    summary="Live stream (server-sent events) of new and changed events and alerts",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "One SSE message per change: `id` the change's seq, `event` its kind "
            "(report, withdrawn, acknowledged, answered, acknowledgement, alert), `data` JSON "
            "with seq, kind, at, and event / report / alert. Resume with Last-Event-ID.",
        },
        **problems(401, 403, 422),
    },
    response_class=Response,
)
async def stream(
    request: Request,
    caller: Officer,
    partner: Partner = None,
    report_type: ReportType = None,
    after: Annotated[
        str | None,
        Query(description="Start after this seq (instead of Last-Event-ID).", max_length=20),
    ] = None,
) -> Response:
    """Every change after ``Last-Event-ID`` (or ``after``; by default, from now on), live."""
    service = service_of(request)
    last_id = request.headers.get("last-event-id")
    start = _cursor(last_id) if last_id else _cursor(after)
    if start is None:
        start = await service.views.last_seq(caller.agency)
    partners = set(_list(partner, "partner", _AGENCY))
    types = set(_list(report_type, "type", _TYPE))

    async def messages() -> AsyncIterator[bytes]:
        # Bytes go out as they are: ready SSE text (JSON data has no newline), many
        # changes in one write.
        yield f"retry: {RETRY_MS}\n\n".encode()
        service.metrics.stream_clients.inc()
        try:
            async for chunk in stream_events(service, caller.agency, start, partners, types):
                yield chunk.encode()
        finally:
            service.metrics.stream_clients.dec()

    return EventSourceResponse(messages(), ping=15, send_timeout=30)


@reading.get(
    "/v1/status",
    summary="How the service follows the bus: partitions, lag, broker resets",
    response_model=ServiceStatus,
    responses=problems(401, 403),
)
async def service_status(request: Request, caller: Officer) -> ServiceStatus:
    """The consumer's partitions and lag, and how often a broker log went backwards."""
    service = service_of(request)
    views = service.views
    partitions = [
        PartitionState(
            topic=s.partition.topic,
            partition=s.partition.partition,
            epoch=s.epoch,
            next_offset=s.position.next_offset,
            highwater=s.highwater,
            lag=s.lag,
            stuck_ms=s.stuck_ms,
            epochs_started=s.epochs_started,
        )
        for s in service.consumer.follower.status()
    ]
    return ServiceStatus(
        agency=caller.agency,
        group_id=service.group_id,
        consuming=service.consumer.consuming,
        partitions=partitions,
        last_seq=await views.last_seq(caller.agency),
        log_resets=await views.count_alerts(caller.agency, "log_reset"),
        alerts=await views.count_alerts(caller.agency),
        publishing=service.gateway is not None,
    )


class Health(BaseModel):
    """Liveness."""

    status: str
    agency: str
    problems: list[str]


@operations.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(request: Request) -> Response:
    """Healthy while consuming, the background parts run and no partition is stuck."""
    service = service_of(request)
    found = []
    failure = service.failure
    if failure is not None:
        found.append(f"a background part stopped: {failure!r}")
    stuck_after = service.liaison.stuck_after_ms
    found.extend(
        f"{s.partition.topic}[{s.partition.partition}] is not advancing"
        for s in service.consumer.follower.status()
        if s.stuck_ms >= stuck_after
    )
    body = Health(status="unavailable" if found else "ok", agency=service.agency, problems=found)
    return Response(body.model_dump_json(), status_code=503 if found else 200, media_type=JSON)


@operations.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> Response:
    """Ready once the consumer joined its group and the store answers."""
    service = service_of(request)
    found = []
    if service.draining:
        found.append("the service is shutting down")
    if not service.consumer.positioned.is_set():
        found.append("the consumer has not joined its group yet")
    try:
        await service.views.last_seq(service.agency)
    except ApiError as exc:
        found.append(str(exc))
    except Exception as exc:  # noqa: BLE001  # a store error: say it
        found.append(f"the store does not answer: {exc}")
    body = Health(status="not ready" if found else "ready", agency=service.agency, problems=found)
    return Response(body.model_dump_json(), status_code=503 if found else 200, media_type=JSON)


@operations.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics: lag per partition, messages by status, webhook deliveries."""
    metrics = service_of(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)


def create_app(service: LiaisonService) -> FastAPI:
    """The liaison API of a started :class:`LiaisonService` (and its console, when present)."""
    app = FastAPI(
        title=f"OIX liaison service ({service.agency})",
        description="What partner agencies released to this agency: events, reports, requests, "
        "summaries, alerts and a live stream; acknowledgements and answers back.",
        version="1",
    )
    app.state.service = service
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for router in (sessions, reading, acting, operations):
        app.include_router(router)
    static = service.liaison.static_dir
    if static.is_dir():
        app.mount("/console", StaticFiles(directory=static, html=True), name="console")

        @app.get("/", include_in_schema=False)
        async def console_home() -> RedirectResponse:
            return RedirectResponse("/console/")

    return app
