"""A progress line on long runs: records so far and the rate (rich), on stderr only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from services.host import err


@contextlib.contextmanager
def progress_bar(what: str, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a live line "what: N records, R/s" (a no-op when not ``enabled``).

    The total is unknown while streaming, so it counts rather than fills.
    """
    if not enabled:
        yield lambda _n: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}: {task.completed:,.0f} records"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(what, total=None, rate="")
        seen = 0

        def advance(count: int) -> None:
            nonlocal seen
            seen += count
            if seen % 500 < count or count > 1:  # redrawing every record would cost more
                elapsed = bar.tasks[task].elapsed or 0.0
                rate = f"{seen / elapsed:,.0f}/s" if elapsed > 0 else ""
                bar.update(task, completed=seen, rate=rate)

        yield advance
        bar.update(task, completed=seen)
