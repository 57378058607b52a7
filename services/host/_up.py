"""``oix up``: the embedded broker and every hosted service, in one process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from services.bus import STOP_SIGNALS, EmbeddedBroker, Exchange, Settings, ensure_topics
from services.host._contract import UpContext, UpHook
from services.host._running import UpRegistration


async def run_up(
    settings: Settings,
    announce: Callable[[str], None],
    hooks: Sequence[tuple[str, UpHook]],
) -> None:
    """Run the broker (unless ``OIX_BOOTSTRAP`` names one) and every hook until a signal.

    ``hooks`` are ``(name, run_in_up)`` pairs, started together in this order;
    ``announce`` gets each line to show (endpoints, then ``ready``, then ``stopped``).
    While it runs, ``<OIX_DATA_DIR>/up.json`` says where (see ``_running.py``).

    Raises:
        ConfigError: another ``oix up`` runs with the same data directory.
    """
    registration = UpRegistration(settings)
    registration.claim()
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
        registration.write(bootstrap)
        announce(f"endpoints  {registration.path} (how oix demo, oix audit … find the broker)")
        created = await ensure_topics(settings, bootstrap, exchange.router.all_topics())
        announce(f"topics     {len(created)} created from {settings.agreement.name}")

        readiness = _Readiness([name for name, _ in hooks], announce, registration.ready)
        async with asyncio.TaskGroup() as group:
            for name, hook in hooks:
                group.create_task(hook(ctx, readiness.ready), name=name)
            all_ready = asyncio.create_task(readiness.all.wait())
            stopping = asyncio.create_task(ctx.stop.wait())
            await asyncio.wait({all_ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if readiness.all.is_set():
                announce("ready      press Ctrl-C to stop")
            await stopping
            all_ready.cancel()
            announce("stopping   draining services")
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        registration.remove()
        if broker is not None:
            await broker.stop()
        announce("stopped")


class _Readiness:
    """Which services of ``oix up`` said they can be reached; prints their endpoints."""

    def __init__(
        self,
        names: list[str],
        announce: Callable[[str], None],
        record: Callable[[str, list[str]], None],
    ) -> None:
        self.names = names
        self.all = asyncio.Event()
        self._waiting = set(names)
        self._announce = announce
        self._record = record

    def ready(self, name: str, endpoints: list[str]) -> None:
        if name not in self.names:
            # Else `oix up` would wait for that service for ever.
            raise ValueError(f"ready({name!r}): the services are {', '.join(self.names)}")
        for endpoint in endpoints or ["running"]:
            self._announce(f"{name:<10} {endpoint}")
        self._record(name, endpoints)
        self._waiting.discard(name)
        if not self._waiting:
            self.all.set()
