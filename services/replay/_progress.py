"""A progress line on long runs: records so far and the rate (rich), on stderr only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from services.host import err

if TYPE_CHECKING:
    from services.replay._kafka import ReadStats


@contextlib.contextmanager
def progress_bar(
    what: str, *, enabled: bool, reading: ReadStats | None = None
) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a live line "what: N records, R/s" (a no-op when not ``enabled``).

    It counts rather than fills: filters on content may keep fewer records
    than the range holds. ``reading``: the read's statistics; once they hold
    the range's size (:attr:`ReadStats.span`), the line adds "read X of ~M (P %)".
    """
    if not enabled:
        yield lambda _n: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}: {task.completed:,.0f} records"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[reach]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(what, total=None, rate="", reach="")
        seen = 0

        def advance(count: int) -> None:
            nonlocal seen
            seen += count
            if seen % 500 < count or count > 1:  # redrawing every record would cost more
                elapsed = bar.tasks[task].elapsed or 0.0
                rate = f"{seen / elapsed:,.0f}/s" if elapsed > 0 else ""
                bar.update(task, completed=seen, rate=rate, reach=_reach_text(reading))

        yield advance
        bar.update(task, completed=seen, reach=_reach_text(reading))


def _reach_text(reading: ReadStats | None) -> str:
    if reading is None:
        return ""
    read, span = reading.read, reading.span
    if not span:
        return ""
    # ~: the broker's end offsets can be off (the local broker's are low), so never past 100 %.
    return f"read {read:,} of ~{span:,} ({min(100, read * 100 // span)} %)"
