"""Waiting on an event in a task that is stopped by cancelling it (pure asyncio, no broker)."""

from __future__ import annotations

import asyncio

import pytest

from services.bus import cancel_and_wait, wait_set

pytestmark = pytest.mark.timeout(30)


async def test_wait_set_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert not await wait_set(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5)


async def test_a_task_cancelled_just_as_its_event_is_set_is_cancelled() -> None:
    # A watcher loop like the gateway's broker gate: woken by an event, stopped by
    # cancelling it. asyncio.wait_for on Python 3.11 returns normally when both come
    # in one turn of the loop, and the loop then runs on: its stopper waited forever.
    event = asyncio.Event()
    rounds = 0

    async def watch() -> None:
        nonlocal rounds
        while True:
            await wait_set(event, 60)
            event.clear()
            rounds += 1

    for _ in range(20):
        task = asyncio.create_task(watch())
        await asyncio.sleep(0)  # the task waits on the event now
        event.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert task in done, f"the watcher ran on after it was cancelled ({rounds} rounds)"
        assert task.cancelled()


async def test_cancel_and_wait_keeps_the_callers_own_cancellation() -> None:
    # A task whose stop takes a while (it cleans up after being cancelled); whoever
    # stops it is cancelled meanwhile. With `cancel(); suppress(CancelledError): await`
    # the stopper swallowed its own cancellation and returned normally.
    cleaning = asyncio.Event()
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()
            raise

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await cleaning.wait()
    stopper.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_cancel_and_wait_raises_what_the_task_raised_on_its_way_out() -> None:
    async def fails_on_stop() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("could not flush") from None

    task = asyncio.create_task(fails_on_stop())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="could not flush"):
        await cancel_and_wait(task)
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    await cancel_and_wait(finished)  # already ended: nothing to cancel, nothing raised
