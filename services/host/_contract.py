"""The hosting contract: how a service joins ``oix …`` and ``oix up``.

A service package exposes two names (see :class:`HostedService`): ``commands``,
the typer app of its ``oix <name> …`` commands, and ``run_in_up``, its part in
``oix up``. The command line lists the services once, in start order; nothing
in a service imports the command line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import typer

from services.bus import Exchange, Settings
from services.host._offers import Offers


class Ready(Protocol):
    """``ready(name, endpoints)``: a service of ``oix up`` can be reached; one line per endpoint.

    ``oix up`` prints ``ready`` once every service has called it.
    """

    def __call__(self, name: str, endpoints: list[str], /) -> None: ...


@dataclass
class UpContext:
    """What every service started by ``oix up`` shares."""

    settings: Settings
    exchange: Exchange
    bootstrap: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on Ctrl-C or SIGTERM: drain, then return."""
    offers: Offers = field(default_factory=Offers)
    """What services offer each other (e.g. a gateway's publishing path to the liaison)."""


class UpHook(Protocol):
    """A service's part in ``oix up``: ``await run_in_up(ctx, ready)``.

    It starts, calls ``ready(name, endpoints)`` once it can be reached, runs
    until ``ctx.stop`` is set, then shuts down cleanly and returns. An
    :class:`~services.bus.OixError` it raises (a port in use, a store that
    cannot be opened) stops ``oix up`` with that one line.
    """

    async def __call__(self, ctx: UpContext, ready: Ready, /) -> None: ...


class HostedService(Protocol):
    """A service package as the command line sees it (modules satisfy it).

    ``commands`` is a :class:`typer.Typer` whose ``name`` is the service's
    name: ``oix <name> …`` and the label of its lines in ``oix up``.
    Both names should load lazily (the package's ``__init__``), so that
    ``oix --help`` imports no web server or database driver.
    """

    @property
    def commands(self) -> typer.Typer: ...

    @property
    def run_in_up(self) -> UpHook: ...


def service_name(service: HostedService) -> str:
    """The name a service's commands are registered under."""
    name = service.commands.info.name
    if not isinstance(name, str) or not name:
        raise TypeError(f"{service!r}: its commands need a name: typer.Typer(name=...)")
    return name
