"""The gate between the gateway and the broker: no 201 for an ack from a broker it did not verify.

The embedded broker (tansu, memory only) forgets every topic when it
restarts, and then *acknowledges* writes to the topics it lost, with offsets
from 0, keeping some and dropping others once the topic is created again;
the new log hands the same coordinates to other reports. Apache Kafka
replaces a log too (a topic deleted and created again, an unclean leader
election). So a 201 is given only for an acknowledgement that came over a
connection to a broker the gateway verified:

- the gate is *closed* at start, after a failed delivery, and whenever a
  connection the producer uses was lost or replaced (a broker that restarted
  cannot answer on the old TCP connection); while it is closed, reports are
  answered 503 with Retry-After and nothing is produced;
- *verifying* reads the broker's metadata (cluster id, topics, partitions)
  and the end offsets of the partitions written to, re-creates (where
  allowed) a topic the broker lost, with the partitions it had, and begins a
  new *broker epoch* when the log was replaced: another cluster id, a topic
  lost or its partitions changed, or a partition that ends before an offset
  the gateway was given and holds another record (or none) where the
  gateway's last acknowledged record below that end should be. Coordinates
  of an earlier epoch name records the broker no longer has; a retry of such
  a report is published again;
- an acknowledgement is vouched for when the gate stayed open and every
  connection is the one verified; otherwise the report is answered 503 (the
  client retries with the same message id; consumers drop a duplicate).

A slow background check (every ``check_every`` s) finds the same changes
between two requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest

from services.bus import (
    H_MESSAGE_ID,
    Settings,
    cancel_and_wait,
    consumer,
    ensure_topics,
    get_logger,
    start_consumer,
    wait_set,
)
from services.gateway._readback import ReadBack
from services.gateway._store import Finding, Store

log = get_logger(__name__)
LATEST = -1
"""ListOffsets timestamp meaning: the end of the log."""
ANCHOR_WAIT = 3.0
"""Seconds to wait for the record at an offset the broker says it holds."""
VERIFY_EVERY = 0.5
"""Seconds between attempts to verify a broker while the gate is closed."""
READ_BACK_EVERY = 1.0
"""Seconds between read-backs of the writes since the gate opened (see ._readback)."""


class UnverifiedBrokerError(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """Not written, or acknowledged by a broker the gateway has not verified."""


class BrokerGate:
    """Open only while the producer talks to a broker the gateway verified."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        store: Store,
        *,
        settings: Settings,
        bootstrap: str | None,
        check_every: float,
        recreate_topics: bool,
        on_change: Callable[[bool, int], None] = lambda _open, _epoch: None,
        on_finding: Callable[[Finding], None] = lambda _finding: None,
    ) -> None:
        self._producer = producer
        self._store = store
        self._settings = settings
        self._bootstrap = bootstrap
        self._check_every = check_every
        self._recreate = recreate_topics
        self._on_change = on_change
        self._on_finding = on_finding
        self._open = False
        self._problem = "the broker has not been verified yet"
        self._generation = 0
        self._connections: dict[Any, Any] = {}
        self._written: set[str] = set()
        self._settled: dict[tuple[str, int], int] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._readback = ReadBack(store, settings, bootstrap, on_finding)
        self._reopening = False

    @property
    def problem(self) -> str | None:
        """Why the gate is closed; None while it is open."""
        return None if self._open else self._problem

    def ticket(self) -> int | None:
        """What a group holds while it is in flight: the verification it was sent under."""
        return self._generation if self._open else None

    def vouches(self, ticket: int | None) -> bool:
        """True when acks received now come from the broker verified for ``ticket``.

        Closes the gate when a connection was lost or replaced since.
        """
        if ticket is None or not self._open or ticket != self._generation:
            return False
        replaced = self._replaced()
        if replaced:
            self.close(replaced)
            return False
        return True

    def close(self, why: str) -> None:
        """Answer 503 from now until the broker is verified again."""
        if self._open:
            epoch = self._store.broker_epoch().epoch
            self._reopening = True  # the broker may come back wrong: read writes back then
            self._readback.mark(epoch, asyncio.get_running_loop().time())
            log.warning("broker gate closed: reports are answered 503 until verified", why=why)
            self._on_change(False, epoch)  # noqa: FBT003  # callback
        self._open = False
        self._problem = why
        self._wake.set()

    async def start(self) -> None:
        """Verify the broker once (the gateway may still start closed), then watch it."""
        await self._attempt()
        self._task = asyncio.create_task(self._watch(), name="broker gate")

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reading_back = self._readback.active(loop.time())
            wait = VERIFY_EVERY if not self._open else self._check_every
            if self._open and reading_back:
                wait = min(wait, READ_BACK_EVERY)
            await wait_set(self._wake, wait)
            self._wake.clear()
            if self._open:
                replaced = self._replaced()
                if replaced:
                    self.close(replaced)
            await self._attempt()
            if self._open and reading_back:
                await self._read_back()

    async def _read_back(self) -> None:
        try:
            await self._readback.sweep()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("could not read writes back; trying again", error=repr(exc))

    async def _attempt(self) -> None:
        try:
            await self._verify()
        except (KafkaError, OSError, TimeoutError) as exc:
            self.close(f"the broker does not answer: {exc!r}")

    def _replaced(self) -> str | None:
        """Why the producer's connections are not the verified ones, or None."""
        current = _node_connections(self._producer)
        for key, connection in self._connections.items():
            if not connection.connected() or current.get(key) is not connection:
                return f"the connection to broker node {key} was lost (it may have restarted)"
        extra = set(current) - set(self._connections)
        if extra:
            return f"new connections to broker nodes {sorted(extra)} since the last check"
        return None

    async def _verify(self) -> None:
        """Look at the broker; re-create lost topics; begin an epoch if its log was replaced."""
        async with self._lock, asyncio.timeout(max(self._check_every, 10.0)):
            client: Any = self._producer.client
            cluster_id, have = await self._metadata(client)
            known = self._store.topics()
            epoch = self._store.broker_epoch()
            changes: list[str] = []
            if cluster_id is not None and epoch.cluster_id not in {None, cluster_id}:
                changes.append(f"the cluster id is {cluster_id}, was {epoch.cluster_id}")
            missing = {t: n for t, n in known.items() if t not in have}
            if missing:
                changes.append(f"the broker lost the topics {', '.join(sorted(missing))}")
            # Fewer partitions is another topic; more is one grown (or a count first
            # learnt: a store of schema 1 knew only the partitions written to).
            changes.extend(
                f"{t} has {have[t]} partitions, had {n}"
                for t, n in known.items()
                if t in have and have[t] < n
            )
            written = self._store.last_offsets(epoch.epoch)
            # Compared with what was acknowledged before the previous look: an
            # ack can come a moment before the broker's end offset moves past it.
            settled = written if self._settled is None else self._settled
            self._settled = written
            behind = await self._replaced_logs(
                epoch.epoch, await self._behind(client, settled, have)
            )
            changes.extend(
                f"{t}/{p} ends at offset {end}, before offset {settled[(t, p)]} it acknowledged"
                for (t, p), end in sorted(behind.items())
            )
            if changes:
                self._settled = {}
                self.close("the broker's log was replaced: " + "; ".join(changes))
                lost = {tp: o for tp, o in written.items() if tp[0] in missing or tp in behind}
                self._begin(changes, cluster_id, epoch.epoch, lost)
            elif epoch.cluster_id is None:
                self._store.set_cluster_id(cluster_id)
            if missing:
                if not self._recreate or self._bootstrap is None:
                    self.close(
                        f"the broker does not have the topics {', '.join(sorted(missing))} "
                        "this gateway wrote to: provision them (`oix provision`), or let the "
                        "gateway re-create them (OIX_GATEWAY_RECREATE_TOPICS=true)"
                    )
                    return
                await self._recreate_topics(self._bootstrap, missing)
                cluster_id, have = await self._metadata(client)
                still = sorted(t for t in missing if t not in have)
                if still:
                    self.close(f"the re-created topics {', '.join(still)} are not there yet")
                    return
            self._store.remember_topics({t: have[t] for t in known if t in have})
            # The producer's view of partitions and leaders, and a connection to
            # every broker, before the connections are taken as the verified ones.
            await client.force_metadata_update()
            for broker in client.cluster.brokers():
                await client.ready(broker.nodeId)
            connections = _node_connections(self._producer)
            if self._open and connections == self._connections:
                return  # nothing changed: groups in flight stay vouched for
            self._open_with(connections, cluster_id, len(have))

    def _open_with(self, connections: dict[Any, Any], cluster_id: str | None, topics: int) -> None:
        """Take ``connections`` as the verified ones and accept reports again."""
        self._connections = connections
        self._generation += 1
        self._open = True
        current = self._store.broker_epoch().epoch
        if self._reopening:
            self._reopening = False
            self._readback.begin(current, asyncio.get_running_loop().time())
        log.info(
            "broker verified: reports are accepted",
            broker_epoch=current,
            cluster_id=cluster_id,
            topics=topics,
        )
        self._on_change(True, current)  # noqa: FBT003  # callback

    def wrote(self, topics: list[str]) -> None:
        """Remember topics acknowledged writes went to, with their partitions (checked later)."""
        new = [t for t in topics if t not in self._written]
        if not new:
            return
        client: Any = self._producer.client
        counts = {t: len(client.cluster.partitions_for_topic(t) or ()) for t in new}
        self._store.remember_topics({t: n for t, n in counts.items() if n})
        self._written.update(t for t, n in counts.items() if n)

    def _begin(
        self,
        changes: list[str],
        cluster_id: str | None,
        epoch: int,
        lost: dict[tuple[str, int], int],
    ) -> None:
        reason = "; ".join(changes)
        if not self._store.last_offsets(epoch):
            # Nothing was acknowledged in this epoch: no coordinates can be stale.
            self._store.set_cluster_id(cluster_id)
            return
        begun, found = self._store.begin_epoch(reason, cluster_id, lost)
        for finding in found:
            self._on_finding(finding)
        log.warning(
            "the broker's log was replaced: a new broker epoch begins; coordinates of earlier "
            "epochs name records it no longer has, and a retry of such a report is published "
            "again",
            broker_epoch=begun,
            reason=reason,
        )

    async def _metadata(self, client: Any) -> tuple[str | None, dict[str, int]]:
        """The cluster id and every topic with its partition count (naming none: no creation)."""
        node = client.get_random_node()
        if node is None:
            raise KafkaError("no broker is known")
        response = await client.send(node, MetadataRequest(None))
        topics: dict[str, int] = {}
        for topic in response.topics:
            # (error, name, partitions) in v0, (error, name, is_internal, partitions) after
            error_code, name, partitions = topic[0], topic[1], topic[-1]
            if error_code == 0:
                topics[name] = len(partitions)
        return getattr(response, "cluster_id", None), topics

    async def _behind(
        self, client: Any, written: dict[tuple[str, int], int], have: dict[str, int]
    ) -> dict[tuple[str, int], int]:
        """Partitions (with their end) that end before the last offset acknowledged there."""
        last = {tp: o for tp, o in written.items() if tp[0] in have}
        if not last:
            return {}
        by_leader: dict[int, dict[str, list[tuple[int, int]]]] = {}
        for topic, partition in last:
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0:
                leader = client.get_random_node()
            by_leader.setdefault(leader, {}).setdefault(topic, []).append((partition, LATEST))
        ends: dict[tuple[str, int], int] = {}
        for leader, topics in by_leader.items():
            response = await client.send(leader, OffsetRequest(-1, 0, list(topics.items())))
            for topic, partitions in response.topics:
                for partition, error_code, *rest in partitions:
                    if error_code == 0:
                        ends[(topic, partition)] = rest[-1]
        return {tp: ends[tp] for tp, o in last.items() if tp in ends and ends[tp] <= o}

    async def _replaced_logs(
        self, epoch: int, suspects: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """Which partitions ending before an offset acknowledged there hold another log.

        An empty partition does. Otherwise the record at the highest offset the
        gateway had acknowledged below its end must be the one acknowledged
        there: the local broker's end offset lags acknowledgements at times, so
        the end alone would find a replaced log where there is none.
        """
        replaced: dict[tuple[str, int], int] = {}
        for (topic, partition), end in suspects.items():
            anchor = self._store.acknowledged_below(epoch, topic, partition, end)
            if end == 0:
                replaced[(topic, partition)] = end
            elif anchor is not None and self._bootstrap is not None:
                offset, message_id = anchor
                held = await self._message_at(self._bootstrap, topic, partition, offset)
                if held != message_id:
                    log.warning(
                        "another record is where the gateway had one acknowledged",
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        acknowledged=message_id,
                        found=held,
                    )
                    replaced[(topic, partition)] = end
        return replaced

    async def _message_at(
        self, bootstrap: str, topic: str, partition: int, offset: int
    ) -> str | None:
        """The message id of the record at (topic, partition, offset), None if none is served."""
        reader = consumer(self._settings, bootstrap, fetch_max_wait_ms=100)
        await start_consumer(reader, self._settings, bootstrap)
        try:
            tp = TopicPartition(topic, partition)
            reader.assign([tp])
            reader.seek(tp, offset)
            deadline = asyncio.get_running_loop().time() + ANCHOR_WAIT
            while asyncio.get_running_loop().time() < deadline:
                for record in (await reader.getmany(tp, timeout_ms=200)).get(tp, []):
                    if record.offset == offset:
                        return dict(record.headers).get(H_MESSAGE_ID, b"").decode() or None
                    if record.offset > offset:
                        return None
            return None
        finally:
            await reader.stop()

    async def _recreate_topics(self, bootstrap: str, missing: dict[str, int]) -> None:
        by_count: dict[int, list[str]] = {}
        for topic, partitions in missing.items():
            by_count.setdefault(partitions, []).append(topic)
        for partitions, topics in by_count.items():
            await ensure_topics(self._settings, bootstrap, sorted(topics), partitions)
        log.warning(
            "re-created topics the broker lost, with the partitions they had",
            topics=sorted(missing),
        )


def _node_connections(producer: AIOKafkaProducer) -> dict[Any, Any]:
    """The producer's open connections to broker nodes, by node id.

    aiokafka offers no public hook for a lost connection; its client keeps
    one connection per (node, group) in ``_conns``, replaced when it breaks.
    """
    client: Any = producer.client
    return {key[0]: conn for key, conn in client._conns.items() if isinstance(key[0], int)}  # noqa: SLF001  # see above
