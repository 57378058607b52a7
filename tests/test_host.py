"""`oix up` as the hosting contract runs it: hooks start together, say ready, stop on the event."""

from __future__ import annotations

import json
import os

import pytest

from services.bus import Settings
from services.host import Ready, UpContext, run_up


async def test_run_up_announces_each_service_then_ready_then_stops(settings: Settings) -> None:
    lines: list[str] = []
    contexts: list[UpContext] = []
    written: list[dict[str, object]] = []

    async def first(ctx: UpContext, ready: Ready) -> None:
        contexts.append(ctx)
        ready("first", ["http://127.0.0.1:1/docs", "token t"])
        await ctx.stop.wait()

    async def second(ctx: UpContext, ready: Ready) -> None:
        ready("second", [])
        state = json.loads((ctx.settings.data_dir / "up.json").read_text())
        written.append({k: state[k] for k in ("pid", "bootstrap", "endpoints")})
        ctx.stop.set()  # as Ctrl-C would
        await ctx.stop.wait()

    await run_up(settings, lines.append, [("first", first), ("second", second)])
    assert settings.bootstrap is not None
    assert lines[0] == f"broker     kafka://{settings.bootstrap}"
    assert lines[1].startswith(f"endpoints  {settings.data_dir / 'up.json'} ")
    assert lines[2].startswith("topics     ")
    assert lines[3:] == [
        "first      http://127.0.0.1:1/docs",
        "first      token t",
        "second     running",
        "ready      press Ctrl-C to stop",
        "stopping   draining services",
        "stopped",
    ]
    [ctx] = contexts
    assert ctx.bootstrap == settings.bootstrap
    assert ctx.exchange.agreement.parties
    assert written == [
        {
            "pid": os.getpid(),
            "bootstrap": settings.bootstrap,
            "endpoints": {"first": ["http://127.0.0.1:1/docs"], "second": []},  # URLs, no token
        }
    ]
    assert not (settings.data_dir / "up.json").exists()  # a clean stop removes it


async def test_a_service_that_says_another_name_is_an_error(settings: Settings) -> None:
    async def confused(ctx: UpContext, ready: Ready) -> None:
        ready("someone else", [])
        await ctx.stop.wait()

    lines: list[str] = []
    with pytest.raises(ExceptionGroup) as raised:
        await run_up(settings, lines.append, [("confused", confused)])
    [error] = raised.value.exceptions
    assert isinstance(error, ValueError)
    assert "ready('someone else'): the services are confused" in str(error)
    assert lines[-1] == "stopped"
