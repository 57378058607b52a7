"""``oix up`` starts the audit consumer on SQLite in the data directory, migrated on the spot."""

from __future__ import annotations

import asyncio

import pytest
from polling import eventually

from services.audit import AuditStore, run_in_up
from services.bus import Exchange, Settings, load_examples
from services.cli import SERVICES
from services.demo import run_demo
from services.host import UpContext, service_name


def test_oix_up_runs_the_audit_consumer_before_the_publishers() -> None:
    names = [service_name(service) for service in SERVICES]
    assert names[0] == "audit"


async def test_the_audit_consumer_of_oix_up_stores_the_demo_stream(
    settings: Settings, exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "METRICS_PORT": "0",
        "SESSION_TIMEOUT_MS": "2000",
        "HEARTBEAT_INTERVAL_MS": "500",
        "REBALANCE_TIMEOUT_MS": "2000",
        "METADATA_MAX_AGE_MS": "500",
    }.items():
        monkeypatch.setenv(f"OIX_AUDIT_{name}", value)
    assert settings.bootstrap is not None
    ctx = UpContext(settings, exchange, settings.bootstrap)
    announced: list[tuple[str, list[str]]] = []
    task = asyncio.create_task(run_in_up(ctx, lambda name, lines: announced.append((name, lines))))
    published = await run_demo(settings, exchange, settings.bootstrap, rounds=1, interval=0)
    assert published >= len(load_examples())
    store_file = settings.data_dir / "audit.db"

    async def started() -> bool:
        return bool(announced)

    await eventually(started, "the audit consumer to announce itself")
    store = await AuditStore.open(f"sqlite+aiosqlite:///{store_file}")
    try:

        async def all_stored() -> bool:
            return await store.count() >= published

        await eventually(all_stored, "the demo stream in the store")
        ctx.stop.set()
        await asyncio.wait_for(task, 30)
        assert await store.count() == published
    finally:
        await store.close()
    (name, lines), *_ = announced
    assert name == "audit"
    assert any(str(store_file) in line for line in lines)
    assert any("/metrics" in line for line in lines)
