"""One error hierarchy for OIX, rooted in :class:`OixError`.

Every error carries what a person needs to fix the cause: the file, the field
path or the Kafka coordinates, and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass


class OixError(Exception):
    """Base of every error OIX raises on purpose."""


class ConfigError(OixError):
    """Settings or a config file are invalid."""


class AgreementError(OixError):
    """The exchange agreement file is invalid, or a report breaks it."""


class RoutingError(AgreementError):
    """A report cannot be routed: its releasability or type does not fit the agreement."""


class SchemaError(OixError):
    """A schema file is invalid or cannot be loaded."""


class SchemaCompatibilityError(SchemaError):
    """A schema change is not compatible with every released version."""


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One problem with one field of a report."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ReportValidationError(OixError):
    """A report failed validation; :attr:`issues` names every failing field."""

    def __init__(self, report_type: str, issues: list[FieldIssue]) -> None:
        self.report_type = report_type
        self.issues = issues
        lines = "; ".join(str(i) for i in issues)
        super().__init__(f"invalid {report_type}: {lines}")


class DecodeError(OixError):
    """Bytes on the bus could not be decoded into a report."""


class UnknownSchemaError(DecodeError):
    """The value names a writer schema fingerprint that was never released."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        """The 16 hex digits of the 8 fingerprint bytes, in wire order."""
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint}: not in schemas/released "
            "(was it released with `oix schemas release`?)"
        )


class CorruptMessageError(DecodeError):
    """The value is truncated, has a wrong prefix, or its Avro body is corrupt."""


class SigningError(OixError):
    """A key is missing, malformed or does not belong to the party using it."""


class BrokerError(OixError):
    """The Kafka broker could not be started or reached."""


class PositionConflictError(OixError):
    """A consumer's store no longer stands where the batch being written follows on.

    Another consumer (a rebalance), or an earlier attempt whose commit did
    land, stored those positions first. Nothing was written; the consume loop
    drops what it holds and asks for the positions again.
    """
