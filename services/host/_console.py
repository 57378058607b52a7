"""What every ``oix`` command shares: where it prints, how it fails, how it runs a coroutine.

A command prints its results on :data:`out` (stdout, so they can be piped) and
its progress and errors on :data:`err`. A failure is one clear line and an
exit code, never a traceback: an :class:`~services.bus.OixError` already says
what went wrong and how to fix it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from services.bus import OixError, Settings, configure_logging, load_settings
from services.host._running import find_running_up

out = Console()
"""Results (stdout)."""
err = Console(stderr=True)
"""Progress, notices and errors (stderr)."""

EXIT_ERROR = 1
"""The command failed; the error line says why."""
EXIT_CONFIG = 2
"""The settings are not valid; the error line names the variable."""

T = TypeVar("T")


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print one clear error line (no traceback) and give the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    """Load settings and logging, or exit with the reason."""
    try:
        settings = load_settings(**overrides)
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


NO_BROKER = "no broker: set OIX_BOOTSTRAP or --bootstrap (or run `oix up`)"


def broker_settings_or_exit(bootstrap: str | None = None, *, required: bool = False) -> Settings:
    """:func:`settings_or_exit` for a command that needs a broker (``--bootstrap`` if given).

    Without ``OIX_BOOTSTRAP`` or ``bootstrap``: the broker of the ``oix up``
    running with the same data directory, saying so on stderr (see
    ``services/host/_running.py``); still none when no ``oix up`` runs, and
    then, if ``required``, one line saying what to set (exit 2).
    """
    settings = settings_or_exit(**({"bootstrap": bootstrap} if bootstrap else {}))
    if settings.bootstrap is not None:
        return settings
    found = find_running_up(settings)
    if found.running is None:
        if found.stale is not None:
            err.print(f"ignoring {found.path}: {found.stale}", highlight=False, soft_wrap=True)
        if required:
            raise fail(NO_BROKER, EXIT_CONFIG)
        return settings
    running = found.running
    err.print(
        f"using the broker of the oix up running as pid {running.pid}: {running.bootstrap} "
        f"(from {found.path}; OIX_BOOTSTRAP chooses another)",
        highlight=False,
        soft_wrap=True,
    )
    return settings.model_copy(update={"bootstrap": running.bootstrap})


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]], code: int = EXIT_ERROR) -> T:
    """Run a coroutine; an :class:`OixError` becomes one error line and exit ``code``."""
    try:
        return asyncio.run(coro_fn())
    except OixError as exc:
        raise fail(str(exc), code) from None
    except ExceptionGroup as group:
        # A service of `oix up` failed inside its task group.
        matched, rest = group.split(OixError)
        if matched is None or rest is not None:
            raise
        raise fail("; ".join(str(e) for e in matched.exceptions), code) from None
