"""The example reports: valid, one of every type, and freshened consistently for the demo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.bus import REPORT_MODELS, Cancellation, freshen, load_examples


def test_examples_cover_every_report_type() -> None:
    assert {e.report.report_type for e in load_examples()} == set(REPORT_MODELS)


def test_freshen_gives_new_ids_and_keeps_links_consistent() -> None:
    originals = [e.report for e in load_examples()]
    at = datetime(2030, 1, 1, tzinfo=UTC)
    fresh = freshen(originals, at)
    old_ids = {r.header.message_id for r in originals}
    new_ids = {r.header.message_id for r in fresh}
    assert not old_ids & new_ids
    assert max(r.header.created_at for r in fresh) == at
    for report in fresh:
        for link in report.header.links:
            assert link.message_id in new_ids
    cancellation = next(r for r in fresh if isinstance(r, Cancellation))
    assert cancellation.cancelled_message_id in new_ids
    spans = [(o.header.created_at - min(x.header.created_at for x in originals)) for o in originals]
    fresh_spans = [(f.header.created_at - min(x.header.created_at for x in fresh)) for f in fresh]
    assert spans == fresh_spans
    assert all(isinstance(s, timedelta) for s in spans)
