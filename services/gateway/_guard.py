"""Catching acknowledgements for writes a broker did not keep.

The embedded broker (tansu, memory only) forgets every topic when it
restarts. A producer that still has the old topics in its metadata cache
then writes to topics the new broker does not have, and the broker
*acknowledges* those writes with offsets from 0 while storing nothing; a
metadata request naming the topic re-creates it, and writes from then on are
kept. Apache Kafka never does this (a write to a missing topic is an error),
so on Kafka this guard only ever looks and finds nothing.

The guard looks after any sign of trouble (a failed or late delivery): for a
while, every acknowledged delivery is confirmed against a metadata snapshot
taken after its ack. A topic our producer knows but the broker does not is
re-created by naming it, and every write acknowledged before that is
reported lost (the client gets 503 and retries) instead of accepted. A slow
background check looks even when nothing failed (a restart between two
requests) and says when it finds a lost topic, naming the window in which
accepted reports may have been lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.bus import get_logger

log = get_logger(__name__)


class LostWriteError(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """The broker acknowledged a write to a topic it does not have: nothing was kept."""


class LostTopicGuard:
    """Confirms acknowledged writes while the broker is suspect; re-creates lost topics."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        suspect_for: float,
        check_every: float,
    ) -> None:
        self._producer = producer
        self._suspect_for = suspect_for
        self._check_every = check_every
        self._suspect_until = 0.0
        self._recreated_at: dict[str, float] = {}
        self._last_clean_check = time.monotonic()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def suspect(self) -> bool:
        """True while acknowledged writes must be confirmed."""
        return time.monotonic() < self._suspect_until

    def trouble(self) -> None:
        """A delivery failed or came late: confirm acks for a while (aiokafka's batch lifetime)."""
        self._suspect_until = time.monotonic() + self._suspect_for

    def start(self) -> None:
        """Check in the background: often while suspect, every ``check_every`` s otherwise."""
        self._task = asyncio.create_task(self._watch(), name="lost topic guard")

    async def stop(self) -> None:
        """Stop the background check."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def lost(self, topics: list[str], sent_at: float) -> list[str]:
        """Which of ``topics`` lost an acknowledged write sent at ``sent_at`` (monotonic).

        A topic re-created after the write was sent counts as lost for it: the
        ack may have come from the broker that did not have it.
        """
        await self._check()
        return [t for t in topics if self._recreated_at.get(t, float("-inf")) >= sent_at]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self._check_every) if self.suspect else self._check_every)
            try:
                await self._check()
            except KafkaError as exc:
                log.debug("broker check failed; the broker may be down", error=repr(exc))

    async def _check(self) -> None:
        # Serialised, and the snapshot taken inside the lock: a write acknowledged
        # before a re-creation either sees its topic missing or a later re-creation.
        async with self._lock:
            client: Any = self._producer.client
            known = set(client.cluster.topics())
            snapshot = (
                await client.fetch_all_metadata()
            )  # all topics: naming them would re-create them
            missing = sorted(known - set(snapshot.topics()))
            if not missing:
                self._last_clean_check = time.monotonic()
                return
            await client.force_metadata_update()  # names the topics: the broker re-creates them
            now = time.monotonic()
            for topic in missing:
                self._recreated_at[topic] = now
            self.trouble()
            log.error(
                "the broker does not have topics it acknowledged writes to: it lost its data "
                "(the memory-only local broker restarted?). Writes acknowledged on them since "
                "the last clean check may be lost; unconfirmed ones are answered 503 and the "
                "topics are re-created",
                topics=missing,
                last_clean_check_seconds_ago=round(now - self._last_clean_check, 3),
            )
