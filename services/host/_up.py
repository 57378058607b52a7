"""``oix up``: the embedded broker and every hosted service, in one process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from services.bus import STOP_SIGNALS, EmbeddedBroker, Exchange, Settings, ensure_topics
from services.host._contract import UpContext, UpHook


async def run_up(
    settings: Settings,
    announce: Callable[[str], None],
    hooks: Sequence[tuple[str, UpHook]],
) -> None:
    """Run the broker (unless ``OIX_BOOTSTRAP`` names one) and every hook until a signal.

    ``hooks`` are ``(name, run_in_up)`` pairs, started together in this order;
    ``announce`` gets each line to show (endpoints, then ``ready``, then ``stopped``).
    """
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

        waiting = {name for name, _ in hooks}
        all_ready = asyncio.Event()

        def ready(name: str, endpoints: list[str]) -> None:
            for endpoint in endpoints or ["running"]:
                announce(f"{name:<10} {endpoint}")
            waiting.discard(name)
            if not waiting:
                all_ready.set()

        async with asyncio.TaskGroup() as group:
            for name, hook in hooks:
                group.create_task(hook(ctx, ready), name=name)
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
