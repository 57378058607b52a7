"""What the consumer noticed about a broker's log, stored beside the records it explains.

The kinds and the event are the bus's (:class:`~services.bus.LogEventKind`,
:class:`~services.bus.LogEvent`): the partition follower notices them for
every consumer; the audit stores them in ``audit_event``.
"""

from __future__ import annotations

from services.bus import LogEvent, LogEventKind

EventKind = LogEventKind
"""The kinds of discontinuity a broker log can show (the bus's :class:`LogEventKind`)."""

__all__ = ["EventKind", "LogEvent"]
