"""Why the gateway refused a report: one class per answer an agency system can get.

Every refusal is a :class:`GatewayError` (itself an :class:`~services.bus.OixError`)
that carries the HTTP status it maps to, a short machine-readable ``code``
(also the ``reason`` label of the rejection metric) and, where fields are at
fault, every failing field with its reason. The SDK raises the same classes
the HTTP front door turns into responses, so both say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.bus import FieldIssue, OixError

MAX_DETAIL = 1000
"""Characters of a refusal's detail kept: it may quote what the client sent."""
MAX_ISSUE_TEXT = 300
"""Characters of a failing field's path and of its reason kept."""
MAX_ISSUES = 100
"""Failing fields listed in one refusal; a last issue says how many more there were."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut.

    Client-supplied strings (a 1 MB ``type`` or ``originator``) are quoted in
    answers and log lines only this far.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _clipped(issues: Sequence[FieldIssue]) -> list[FieldIssue]:
    kept = [
        FieldIssue(clip(i.path, MAX_ISSUE_TEXT), clip(i.reason, MAX_ISSUE_TEXT))
        for i in issues[:MAX_ISSUES]
    ]
    if len(issues) > MAX_ISSUES:
        kept.append(FieldIssue("(more)", f"{len(issues) - MAX_ISSUES} more failing fields"))
    return kept


class GatewayError(OixError):
    """A report or request the gateway did not accept, and why."""

    status: int = 500
    code: str = "error"
    title: str = "Not accepted"

    def __init__(
        self,
        detail: str,
        issues: Sequence[FieldIssue] = (),
        message_id: str | None = None,
    ) -> None:
        # Clipped here, once, so no answer or log line repeats a huge client string.
        self.detail = clip(detail, MAX_DETAIL)
        self.issues = _clipped(issues)
        self.message_id = message_id
        super().__init__(self.detail)


class MalformedReportError(GatewayError):
    """The body is not JSON, not a JSON object, or names no known report type."""

    status = 400
    code = "malformed"
    title = "Malformed request"


class UnauthorizedError(GatewayError):
    """No bearer token, or one this gateway does not know."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(GatewayError):
    """The token is valid but may not do this: publish for another agency."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(GatewayError):
    """No message with this id was published through this gateway."""

    status = 404
    code = "not_found"
    title = "Not found"


class RequestTimeoutError(GatewayError):
    """The client did not send its whole body in time; the connection is closed."""

    status = 408
    code = "timeout"
    title = "Request timeout"


class IdempotencyConflictError(GatewayError):
    """A message id or Idempotency-Key was already used for a different request."""

    status = 409
    code = "conflict"
    title = "Conflict"


class MessageIdTakenError(IdempotencyConflictError):
    """Another party was seen using the message id: ids are unique per originator."""

    code = "message_id_taken"


class PayloadTooLargeError(GatewayError):
    """The body, or the number of reports in a batch, is over the configured limit."""

    status = 413
    code = "too_large"
    title = "Payload too large"


class UnsupportedMediaTypeError(GatewayError):
    """The body is neither JSON nor NDJSON."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class ReportRejectedError(GatewayError):
    """The report is not valid, or breaks the agreement or the rules for corrections."""

    status = 422
    code = "invalid"
    title = "Report rejected"


class InternalError(GatewayError):
    """The gateway failed on this report (a bug): said as a problem, per report, never a crash."""

    status = 500
    code = "internal"
    title = "Internal error"


class ServiceUnavailableError(GatewayError):
    """The gateway cannot publish right now; the client should retry after ``retry_after`` s."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"

    def __init__(
        self,
        detail: str,
        retry_after: int,
        message_id: str | None = None,
    ) -> None:
        super().__init__(detail, message_id=message_id)
        self.retry_after = retry_after


class BrokerUnavailableError(ServiceUnavailableError):
    """The broker did not acknowledge the report within the publish timeout."""

    code = "broker_unavailable"


class ShuttingDownError(ServiceUnavailableError):
    """The gateway is stopping and takes no new reports."""

    code = "shutting_down"
