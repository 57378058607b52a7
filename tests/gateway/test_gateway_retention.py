"""The gateway forgets idempotency keys past their window while it runs (real SQLite file)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from polling import eventually

from services.gateway._results import Accepted
from services.gateway._retention import KeyForgetter
from services.gateway._store import Record, Store

pytestmark = pytest.mark.timeout(30)

EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


def _record(key: str, at: datetime) -> Record:
    accepted = Accepted(
        message_id=str(uuid.uuid4()),
        report_type="IncidentReport",
        event_id=str(uuid.uuid4()),
        key="k",
        deliveries=(),
        releasable_to=("LV-VRS",),
        accepted_at=at,
        trace_id=None,
    )
    return Record(accepted, "fingerprint", key)


async def test_keys_past_the_window_are_forgotten_and_the_others_kept(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "LT-VSAT.sqlite3")
    now = datetime.now(UTC)
    store.record([_record("old", now - timedelta(hours=25)), _record("new", now)])
    assert store.key_use("old", EPOCH) is not None
    forgetter = KeyForgetter(store, timedelta(hours=24), every_s=0.05)
    forgetter.start()
    try:
        await eventually(lambda: store.key_use("old", EPOCH) is None, "the old key forgotten")
    finally:
        await forgetter.stop()
        store.close()
    reopened = Store.open(tmp_path / "LT-VSAT.sqlite3")
    try:
        assert reopened.key_use("old", EPOCH) is None
        assert reopened.key_use("new", EPOCH) is not None
    finally:
        reopened.close()
    assert forgetter.forgotten == 1
