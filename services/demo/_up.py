"""The demo stream inside ``oix up``."""

from __future__ import annotations

from services.demo._stream import run_demo
from services.host import Ready, UpContext


async def run_in_up(ctx: UpContext, ready: Ready) -> None:
    """One example report every two seconds until ``oix up`` stops."""
    ready("demo", [f"publishing deploy/examples every 2 s to {ctx.settings.topic_prefix}.*"])
    await run_demo(
        ctx.settings, ctx.exchange, ctx.bootstrap, rounds=None, interval=2.0, stop=ctx.stop
    )
