"""The audit consumer inside ``oix up``: the embedded SQLite store under ``OIX_DATA_DIR``."""

from __future__ import annotations

from services.audit._service import Running, run_audit
from services.audit._settings import load_audit_settings
from services.host import Ready, UpContext


async def run_in_up(ctx: UpContext, ready: Ready) -> None:
    """Audit every topic into SQLite (migrated on the spot) until ``oix up`` stops."""
    audit = load_audit_settings()

    def announce(running: Running) -> None:
        endpoints = [f"store {running.store}"]
        if running.metrics_url:
            endpoints.append(f"metrics {running.metrics_url} (and /healthz)")
        ready("audit", endpoints)

    await run_audit(
        ctx.settings,
        audit,
        ctx.bootstrap,
        ctx.stop,
        exchange=ctx.exchange,
        migrate_first=True,
        on_ready=announce,
    )
