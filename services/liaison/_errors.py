"""The liaison service's errors, rooted in the bus's :class:`~services.bus.OixError`.

Store errors say whether a retry can help; API errors carry the HTTP status
they map to, a machine-readable ``code`` and, where fields are at fault,
every failing field with its reason (RFC 9457 problem details, as the
gateway answers).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.bus import FieldIssue, OixError, PositionConflictError


class LiaisonError(OixError):
    """Base of every error the liaison service raises on purpose."""


class StoreError(LiaisonError):
    """The liaison store refused an operation for a reason a retry will not fix."""


class StoreUnavailableError(StoreError):
    """The liaison store cannot be reached right now; the operation may be retried."""


class StoreConflictError(StoreError, PositionConflictError):
    """The store's position for a partition is not the one a batch was built on.

    Another replica of the agency's liaison service (after a rebalance) stored
    those offsets first. Nothing was written; the consumer reloads its
    positions from the store and carries on.
    """


class SchemaVersionError(StoreError):
    """The database is not at the schema version this release needs."""


class ApiError(LiaisonError):
    """A request the liaison API did not carry out, and why."""

    status: int = 500
    code: str = "error"
    title: str = "Not done"

    def __init__(self, detail: str, issues: Sequence[FieldIssue] = ()) -> None:
        self.detail = detail
        self.issues = list(issues)
        super().__init__(detail)


class InvalidRequestError(ApiError):
    """A parameter or body field is not valid; ``issues`` names each one."""

    status = 422
    code = "invalid"
    title = "Invalid request"


class UnauthorizedError(ApiError):
    """No session, an expired one, or wrong credentials."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(ApiError):
    """The session may not do this (a missing CSRF token, another agency's session)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(ApiError):
    """Nothing of that id is visible to this agency (whether or not it exists elsewhere)."""

    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(ApiError):
    """The request does not fit what the store holds (e.g. answering what cannot be answered)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class PublishingError(ApiError):
    """The agency's gateway refused or could not be reached; ``status`` says which."""

    code = "publishing_failed"
    title = "Not published"

    def __init__(self, status: int, detail: str, issues: Sequence[FieldIssue] = ()) -> None:
        self.status = status
        super().__init__(detail, issues)
