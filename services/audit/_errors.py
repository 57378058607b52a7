"""The audit service's errors, rooted in the bus's :class:`~services.bus.OixError`."""

from __future__ import annotations

from services.bus import OixError, PositionConflictError


class AuditError(OixError):
    """Base of every error the audit service raises on purpose."""


class StoreError(AuditError):
    """The audit store refused an operation for a reason a retry will not fix."""


class StoreUnavailableError(StoreError):
    """The audit store cannot be reached right now; the operation may be retried."""


class StoreConflictError(StoreError, PositionConflictError):
    """The store's position for a partition is not the one a batch was built on.

    Another audit consumer (or an earlier attempt whose commit outcome was
    unknown) stored those offsets first. Nothing was written; the consumer
    reloads its positions from the store and carries on.
    """


class SchemaVersionError(StoreError):
    """The database is not at the schema version this release needs."""


class RetentionRefusedError(AuditError):
    """A purge, erasure or hold request the rules forbid (not the originator, held, unknown)."""
