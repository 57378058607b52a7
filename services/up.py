"""``oix up``: the embedded broker and every OIX service on the example agreement, in one process.

Each service offers a ``run_in_up(ctx, ready)`` coroutine: it starts, calls
``ready(name, endpoints)`` once it can be reached, runs until ``ctx.stop`` is
set, then shuts down cleanly and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from services.bus import STOP_SIGNALS, EmbeddedBroker, Exchange, Settings, get_logger
from services.bus._provision import ensure_topics

log = get_logger(__name__)

Ready = Callable[[str, list[str]], None]


@dataclass
class UpContext:
    """What every service started by ``oix up`` shares."""

    settings: Settings
    exchange: Exchange
    bootstrap: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)


ServiceRunner = Callable[[UpContext, Ready], Coroutine[Any, Any, None]]


def service_runners() -> list[tuple[str, ServiceRunner]]:
    """The services ``oix up`` starts, in start order."""
    from services.audit import run_in_up as audit  # noqa: PLC0415  # keeps `oix --help` fast
    from services.demo import run_in_up as demo  # noqa: PLC0415  # keeps `oix --help` fast
    from services.gateway import run_in_up as gateway  # noqa: PLC0415

    return [("audit", audit), ("gateway", gateway), ("demo", demo)]


async def run_up(
    settings: Settings,
    announce: Callable[[str], None],
    runners: list[tuple[str, ServiceRunner]] | None = None,
) -> None:
    """Run the broker (unless ``OIX_BOOTSTRAP`` names one) and every service until a signal."""
    exchange = Exchange.from_settings(settings)
    broker: EmbeddedBroker | None = None
    if settings.bootstrap is None:
        broker = EmbeddedBroker(binary=settings.tansu_bin)
        await broker.start()
        bootstrap = broker.bootstrap
        announce(f"broker     kafka://{bootstrap}  (embedded tansu, memory only)")
    else:
        bootstrap = settings.bootstrap
        announce(f"broker     kafka://{bootstrap}")
    ctx = UpContext(settings, exchange, bootstrap)
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, ctx.stop.set)
    try:
        created = await ensure_topics(settings, bootstrap, exchange.router.all_topics())
        announce(f"topics     {len(created)} created from {settings.agreement.name}")

        chosen = runners if runners is not None else service_runners()
        waiting = {name for name, _ in chosen}
        all_ready = asyncio.Event()

        def ready(name: str, endpoints: list[str]) -> None:
            for endpoint in endpoints or ["running"]:
                announce(f"{name:<10} {endpoint}")
            waiting.discard(name)
            if not waiting:
                all_ready.set()

        async with asyncio.TaskGroup() as group:
            for name, runner in chosen:
                group.create_task(runner(ctx, ready), name=name)
            readiness = asyncio.create_task(all_ready.wait())
            stopping = asyncio.create_task(ctx.stop.wait())
            await asyncio.wait({readiness, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if all_ready.is_set():
                announce("ready      press Ctrl-C to stop")
            await stopping
            readiness.cancel()
            announce("stopping   draining services")
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        if broker is not None:
            await broker.stop()
        announce("stopped")
