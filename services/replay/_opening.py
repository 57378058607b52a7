"""Opening replayed records in worker processes: decode (and verify) off the main process.

Decoding (fastavro, ~60 µs a record) and verifying (~100 µs) hold the GIL;
the bus's :class:`~services.bus.OpenerPool` runs them in worker processes.
What crosses back is small and cheap to pickle: a tuple of short strings and,
for the Avro file, the report already encoded as the container's ``report``
field (``_avro.encode_report``), not the decoded dict; the dict comes back
only when the output needs it (JSON lines, CSV, a table, a content filter).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import Any, NamedTuple

from services.bus import (
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_TYPE,
    Decoded,
    DecodeError,
    Opener,
)
from services.replay._avro import encode_report
from services.replay._record import (
    NOT_CHECKED,
    NOT_CHECKED_DETAIL,
    Headers,
    header_text,
    value_fingerprint,
)

OpenOne = Any
"""``partial(open_record, …)``: pickled by reference to this module's function."""


class Opening(NamedTuple):
    """What opening one value found, as it crosses back from a worker."""

    schema_fingerprint: str | None
    report_type: str | None
    message_id: str | None
    originator: str | None
    signature_status: str
    signature_detail: str
    decode_error: str | None
    report_avro: bytes | None
    report: dict[str, Any] | None


def open_record(
    opener: Opener,
    value: bytes | None,
    headers: Headers,
    *,
    checks: bool,
    reports: bool,
) -> Opening:
    """Decode (with ``checks`` also verify) one value; never raises for bad input.

    ``reports``: also send back the decoded report as a dict.
    """
    data = value or b""
    decoded: Decoded | None = None
    error: str | None = None
    if checks:
        opened = opener.open(value, headers)
        decoded = opened.decoded
        status, detail = str(opened.verification.status), opened.verification.reason
        if opened.decode_error is not None:
            error = f"{type(opened.decode_error).__name__}: {opened.decode_error}"
    else:
        status, detail = NOT_CHECKED, NOT_CHECKED_DETAIL
        try:
            decoded = opener.codec.decode(data)
        except DecodeError as exc:
            error = f"{type(exc).__name__}: {exc}"
    fingerprint = value_fingerprint(data)
    if decoded is None:
        found = dict(headers)
        return Opening(
            fingerprint,
            header_text(found, H_TYPE),
            header_text(found, H_MESSAGE_ID),
            header_text(found, H_ORIGINATOR),
            status,
            detail,
            error,
            None,
            None,
        )
    return Opening(
        fingerprint,
        decoded.report_type,
        str(decoded.message_id),
        decoded.originator,
        status,
        detail,
        None,
        # One form crosses back: the dict when asked for (the writer encodes from it), else
        # the report already encoded for an Avro file.
        None if reports else encode_report(opener.codec, decoded, data),
        decoded.record if reports else None,
    )


def worker_preload() -> tuple[str, ...]:
    """The OIX modules this process imported, for the workers' forkserver to import once.

    Each worker imports the main script again (``oix``: the whole CLI, about
    a second of CPU); with these already imported in the server it forks
    from, that import finds them there.
    """
    return tuple(sorted(name for name in sys.modules if name.split(".")[0] == "services"))


def default_processes() -> int:
    """Worker processes opening records: one per CPU, at most 4 (this one fetches, writes)."""
    return min(4, os.cpu_count() or 1)


def opening_for(*, checks: bool, reports: bool) -> OpenOne:
    """The module-level ``open_one`` for an :class:`~services.bus.OpenerPool`."""
    return partial(open_record, checks=checks, reports=reports)
