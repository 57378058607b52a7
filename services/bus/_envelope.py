"""Reports as Kafka records: sealing (encode, sign, headers) and opening (decode, verify).

Kafka headers repeat a few signed facts so that tools can route and filter
without decoding; opening a record checks them against the signed content, and
a header that contradicts it makes the record invalid.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from services.bus._codec import Codec, Decoded
from services.bus._errors import DecodeError, SigningError
from services.bus._reports import Report
from services.bus._signing import SignatureStatus, Signer, Verification, Verifier

H_MESSAGE_ID = "oix-message-id"
H_ORIGINATOR = "oix-originator"
H_TYPE = "oix-type"
H_SCHEMA = "oix-schema"
H_SIGNATURE = "oix-signature"
H_KEY_ID = "oix-key-id"
H_TRACEPARENT = "traceparent"

H_QUARANTINE_TOPIC = "oix-quarantine-topic"
H_QUARANTINE_PARTITION = "oix-quarantine-partition"
H_QUARANTINE_OFFSET = "oix-quarantine-offset"
H_QUARANTINE_EPOCH = "oix-quarantine-epoch"
H_QUARANTINE_TIMESTAMP = "oix-quarantine-timestamp"
H_QUARANTINE_REASON = "oix-quarantine-reason"
H_QUARANTINE_DETAIL = "oix-quarantine-detail"
"""Headers the audit consumer appends to the copy of a record it quarantines (UTF-8 text)."""

Headers = Sequence[tuple[str, bytes]]


def new_traceparent() -> str:
    """A fresh W3C trace context (version 00, sampled)."""
    # Trace ids must be unique, not secret: the PRNG (as OpenTelemetry's id
    # generator uses) spares a system call per report. `| 1`: never all zeros.
    trace_id = random.getrandbits(128) | 1
    span_id = random.getrandbits(64) | 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id inside a W3C ``traceparent``, or None when it is malformed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32:  # noqa: PLR2004
        return None
    return parts[1]


@dataclass(slots=True)  # not frozen: it costs 0.5 µs per record on the hot path
class SealedReport:
    """A report ready to produce: key, value and headers."""

    report_type: str
    message_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    traceparent: str


class Sealer:
    """Encodes and signs reports of one party."""

    def __init__(self, codec: Codec, signer: Signer) -> None:
        self.codec = codec
        self.signer = signer
        self._schema_header = {
            name: schema.fingerprint_hex.encode() for name, schema in codec.registry.current.items()
        }

    def seal(
        self, report: Report, *, key: str | None = None, traceparent: str | None = None
    ) -> SealedReport:
        """Encode and sign ``report``; ``key`` overrides its subject (to follow an original)."""
        originator = report.header.originator
        if originator != self.signer.party:
            raise SigningError(
                f"header.originator: {originator} cannot be signed with {self.signer.party}'s key",
            )
        value = self.codec.encode(report)
        signature = self.signer.sign(value)
        message_id = str(report.header.message_id)
        traceparent = traceparent or new_traceparent()
        headers = [
            (H_MESSAGE_ID, message_id.encode()),
            (H_ORIGINATOR, originator.encode()),
            (H_TYPE, report.report_type.encode()),
            (H_SCHEMA, self._schema_header[report.report_type]),
            (H_SIGNATURE, signature),
            (H_KEY_ID, self.signer.key_id_bytes),
            (H_TRACEPARENT, traceparent.encode()),
        ]
        return SealedReport(
            report.report_type,
            message_id,
            (key or report.subject).encode(),
            value,
            headers,
            traceparent,
        )


@dataclass(slots=True)  # not frozen: it costs 0.5 µs per record on the hot path
class Opened:
    """What a consumer learns from one record."""

    verification: Verification
    decoded: Decoded | None
    decode_error: DecodeError | None
    headers: dict[str, bytes]

    @property
    def trusted(self) -> bool:
        """Decoded and signed by the originator it names: safe to act on."""
        return self.decoded is not None and self.verification.ok

    @property
    def problem(self) -> str:
        """Why the record is not trusted, or an empty string."""
        if self.decode_error is not None:
            return f"undecodable: {self.decode_error}"
        if not self.verification.ok:
            return f"{self.verification.status}: {self.verification.reason}"
        return ""

    def text_header(self, name: str) -> str | None:
        """A header as text, or None when it is absent or not UTF-8."""
        raw = self.headers.get(name)
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return None


class Opener:
    """Decodes and verifies records against the agreement's keys."""

    def __init__(self, codec: Codec, verifier: Verifier) -> None:
        self.codec = codec
        self.verifier = verifier

    def open(self, value: bytes | None, headers: Headers) -> Opened:
        """Decode and verify one record; never raises for bad input."""
        found = dict(headers)
        data = value or b""
        decoded: Decoded | None = None
        error: DecodeError | None = None
        try:
            decoded = self.codec.decode(data)
        except DecodeError as exc:
            error = exc
        signature = found.get(H_SIGNATURE)
        key_id = found.get(H_KEY_ID)
        verification = self.verifier.verify(
            data,
            signature,
            key_id.decode(errors="replace") if key_id is not None else None,
            decoded.originator if decoded is not None else None,
            # Key validity (rotation) counts by the signed creation time: see Verifier.
            decoded.header["created_at"] if decoded is not None else None,
        )
        if decoded is None:
            verification = _claimed_by_another(found, verification)
        elif verification.status is not SignatureStatus.UNSIGNED:
            mismatch = _contradiction(found, decoded)
            if mismatch:
                verification = Verification(SignatureStatus.INVALID, mismatch, verification.party)
        return Opened(verification, decoded, error, found)


def _claimed_by_another(headers: dict[str, bytes], verification: Verification) -> Verification:
    """Undecodable content: a header naming another originator than the signer is a forgery.

    The header is no proof either way, but one that contradicts the key's party
    shows somebody claiming to be another party.
    """
    party = verification.party
    claimed = headers.get(H_ORIGINATOR)
    if (
        verification.status is not SignatureStatus.UNVERIFIED_ORIGIN
        or claimed is None
        or party is None
        or claimed == party.encode()
    ):
        return verification
    shown = claimed.decode(errors="replace")
    return Verification(
        SignatureStatus.INVALID,
        f"signed with {party}'s key but header {H_ORIGINATOR} claims {shown!r}, and the "
        "signed content cannot be decoded to settle it",
        party,
    )


def _contradiction(headers: dict[str, bytes], decoded: Decoded) -> str:
    """The first Kafka header that contradicts the signed content, described."""
    expected = {
        H_MESSAGE_ID: str(decoded.message_id),
        H_ORIGINATOR: decoded.originator,
        H_TYPE: decoded.report_type,
        H_SCHEMA: decoded.writer_fingerprint.hex(),
    }
    for name, signed in expected.items():
        raw = headers.get(name)
        if raw is None:
            return f"header {name} is missing"
        if raw != signed.encode():
            shown = raw.decode(errors="replace")
            return f"header {name}={shown!r} contradicts the signed content ({signed!r})"
    return ""
