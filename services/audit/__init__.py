"""The audit consumer and store: every OIX record persisted exactly once, provably complete.

``oix audit run`` consumes every OIX topic into the store (SQLite embedded,
PostgreSQL in production); ``oix audit verify`` proves the store complete and
unaltered; ``oix audit query`` finds records for auditors. See ``docs/audit.md``.

Names load on first use, so that ``oix --help`` does not import SQLAlchemy,
Alembic and the Prometheus client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.audit._broker_view import BrokerPartition, read_broker_view
    from services.audit._chain import GENESIS, canonical, chain, link
    from services.audit._cli import audit_app
    from services.audit._consumer import AuditConsumer
    from services.audit._errors import (
        AuditError,
        SchemaVersionError,
        StoreConflictError,
        StoreError,
        StoreUnavailableError,
    )
    from services.audit._events import EventKind, LogEvent
    from services.audit._metrics import AuditMetrics, Health, MetricsServer
    from services.audit._migrate import Migration, grant, head_revision, migrate, migration_sql
    from services.audit._opening import RecordOpener
    from services.audit._query import RecordQuery
    from services.audit._record import AuditRecord, open_record
    from services.audit._service import Running, run_audit
    from services.audit._settings import AuditSettings, load_audit_settings
    from services.audit._store import AuditStore, PartitionExtent, PartitionHead
    from services.audit._up import run_in_up
    from services.audit._verify import (
        Finding,
        FindingKind,
        PartitionSummary,
        Verifier,
        VerifyReport,
    )

_MODULES = {
    "AuditConsumer": "services.audit._consumer",
    "AuditError": "services.audit._errors",
    "AuditMetrics": "services.audit._metrics",
    "AuditRecord": "services.audit._record",
    "AuditSettings": "services.audit._settings",
    "AuditStore": "services.audit._store",
    "BrokerPartition": "services.audit._broker_view",
    "EventKind": "services.audit._events",
    "Finding": "services.audit._verify",
    "FindingKind": "services.audit._verify",
    "GENESIS": "services.audit._chain",
    "Health": "services.audit._metrics",
    "LogEvent": "services.audit._events",
    "MetricsServer": "services.audit._metrics",
    "Migration": "services.audit._migrate",
    "PartitionExtent": "services.audit._store",
    "PartitionHead": "services.audit._store",
    "PartitionSummary": "services.audit._verify",
    "RecordOpener": "services.audit._opening",
    "RecordQuery": "services.audit._query",
    "Running": "services.audit._service",
    "SchemaVersionError": "services.audit._errors",
    "StoreConflictError": "services.audit._errors",
    "StoreError": "services.audit._errors",
    "StoreUnavailableError": "services.audit._errors",
    "Verifier": "services.audit._verify",
    "VerifyReport": "services.audit._verify",
    "audit_app": "services.audit._cli",
    "canonical": "services.audit._chain",
    "chain": "services.audit._chain",
    "grant": "services.audit._migrate",
    "head_revision": "services.audit._migrate",
    "link": "services.audit._chain",
    "load_audit_settings": "services.audit._settings",
    "migrate": "services.audit._migrate",
    "migration_sql": "services.audit._migrate",
    "open_record": "services.audit._record",
    "read_broker_view": "services.audit._broker_view",
    "run_audit": "services.audit._service",
    "run_in_up": "services.audit._up",
}

__all__ = [
    "GENESIS",
    "AuditConsumer",
    "AuditError",
    "AuditMetrics",
    "AuditRecord",
    "AuditSettings",
    "AuditStore",
    "BrokerPartition",
    "EventKind",
    "Finding",
    "FindingKind",
    "Health",
    "LogEvent",
    "MetricsServer",
    "Migration",
    "PartitionExtent",
    "PartitionHead",
    "PartitionSummary",
    "RecordOpener",
    "RecordQuery",
    "Running",
    "SchemaVersionError",
    "StoreConflictError",
    "StoreError",
    "StoreUnavailableError",
    "Verifier",
    "VerifyReport",
    "audit_app",
    "canonical",
    "chain",
    "grant",
    "head_revision",
    "link",
    "load_audit_settings",
    "migrate",
    "migration_sql",
    "open_record",
    "read_broker_view",
    "run_audit",
    "run_in_up",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
