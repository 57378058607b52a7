"""The partition follower: the one way an OIX consumer reads the bus.

Every consumer (the audit, the gateway's acknowledgement reader, the liaison
service, the auditors' replay) keeps its read positions in its own store, in
the same transaction as what it makes of the records, and must notice a
broker log that went backwards or lost records instead of skipping or
overwriting silently. :class:`Follower` does that once:

- it follows the partitions it is given: :meth:`Follower.assign` (no group,
  e.g. every partition of some topics) or :meth:`Follower.subscribe` (a
  consumer group, with a rebalance listener);
- on every assignment it asks the caller for each partition's
  :class:`~services.bus.Position` and seeks there; Kafka's group offsets are
  never used to resume (they are committed, when asked, for lag monitoring
  only);
- every fetch is checked by a :class:`~services.bus.Continuity` per partition
  (an overlap anchor; see ``_continuity.py``): what is admitted continues what
  the caller stored, offsets are never admitted twice in one epoch, and gaps,
  repeated offsets and logs that went backwards come out as
  :class:`~services.bus.LogEvent` records beside the records;
- it exposes the broker's high watermark from fetch responses
  (``end_offsets`` is wrong on the local broker), each partition's status
  (position, epochs started, how long it has been stuck) and, with ``until``,
  stops at end offsets or at the high watermark seen at the start (replay).

:meth:`Follower.fetch` is one round (fetch, check, re-anchor);
:meth:`Follower.consume` is the whole consume loop, composing the fetch with
opening (decode and verify, optionally in worker processes) and with batches
bounded by count, bytes and age, one batch written while the next is fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, Self, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from services.bus._batch import Batch, BatchLimits
from services.bus._consume import Pipeline
from services.bus._continuity import (
    Admitted,
    Continuity,
    KafkaRecord,
    PartitionHistory,
    Position,
    Slice,
    admit_slice,
)
from services.bus._errors import BrokerError
from services.bus._kafka import consumer, start_consumer
from services.bus._logging import get_logger
from services.bus._settings import Settings
from services.bus._signals import cancel_and_wait

log = get_logger(__name__)
T = TypeVar("T")

_RETRY_S = 1.0
_DIGEST_TAG = b"oix-record-digest/1\n"
_LENGTH = struct.Struct(">q")


class Positions(Protocol):
    """Where the caller's store stands on each partition; asked on every assignment.

    A partition left out of the answer is not read (paused) until the next
    :meth:`Follower.reposition`; an exception stops the follower (its next
    fetch raises it).
    """

    async def __call__(
        self, partitions: Sequence[TopicPartition]
    ) -> Mapping[TopicPartition, Position]: ...


def record_digest(record: KafkaRecord) -> bytes:
    """SHA-256 of what the broker says about a record: timestamp, its type, key, headers, value.

    Two reads of one record give the same digest; a different record at the
    same offset (a replaced log) almost surely does not. Store it with a
    position (:meth:`Position.after`) to resume anchored.
    """
    parts = [_DIGEST_TAG, _LENGTH.pack(record.timestamp), _LENGTH.pack(record.timestamp_type)]
    for field in (record.key, *(b for pair in record.headers for b in _header(pair)), record.value):
        if field is None:
            parts.append(_LENGTH.pack(-1))
        else:
            parts.extend((_LENGTH.pack(len(field)), field))
    return hashlib.sha256(b"".join(parts)).digest()


def _header(pair: tuple[str, bytes]) -> tuple[bytes, bytes]:
    name, value = pair
    return name.encode(), value


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One followed partition, for health checks and metrics."""

    partition: TopicPartition
    epoch: int
    position: Position
    highwater: int | None
    """The broker's high watermark from the latest fetch response (None before one)."""
    epochs_started: int
    """Epochs this follower began on the partition (logs that went backwards)."""
    stuck_ms: int
    """How long the position has not advanced while the broker's log held more; 0 otherwise."""

    @property
    def lag(self) -> int | None:
        """Records on the broker past the position (None while the high watermark is unknown)."""
        if self.highwater is None:
            return None
        return max(0, self.highwater - (self.position.next_offset or 0))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: Follower) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner._revoked(revoked)  # noqa: SLF001  # the listener is the follower's own part

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner._assigned(assigned)  # noqa: SLF001  # same


class _Consuming(Protocol):
    """What the follower needs of a running consume loop (``_consume.py``)."""

    @property
    def pending(self) -> int: ...
    async def settled(self) -> None: ...
    def revoked(self, partitions: set[TopicPartition]) -> None: ...


class Follower:
    """Follows Kafka partitions from the positions a consumer keeps in its own store.

    The contract:

    - **Positions are the caller's.** ``positions`` is called with the
      partitions whenever they are assigned (and by :meth:`reposition`); the
      follower seeks to each answer and never trusts Kafka's group offsets.
      Store a slice's :attr:`Slice.position` in the same transaction as what
      you make of its records; with :meth:`consume`, positions are asked only
      after the batch being written is committed (or failed).
    - **Every record admitted continues the last one**, proven by an overlap
      anchor (``digest``, :func:`record_digest` by default; a caller that
      keeps its own digest of stored records passes that function). What
      does not fit is a :class:`LogEvent` in the slice: a gap, an offset
      served twice (the first record kept, the other described), or a log
      that went backwards (a new epoch starts at the beginning of the new
      log). Whatever the broker serves, the follower makes progress or shows
      the partition as stuck (:meth:`status`); no anomaly begins two epochs.
    - **Group or not.** :meth:`subscribe` joins ``group_id``'s group (a
      rebalance drops what was not stored for revoked partitions and
      repositions from the caller's store); :meth:`assign` follows partitions
      explicitly (no group needed, e.g. every replica of a service reading
      everything, or a replay). Offsets are committed to the group only with
      ``commit_interval_ms`` (lag monitoring), after the caller acknowledged
      them as stored (:meth:`acknowledge`); never without a group.
    - **Where to stop.** ``until`` maps partitions to end offsets (exclusive),
      or ``"highwater"`` takes each partition's high watermark from the first
      fetch after it was positioned; a partition stops there and :attr:`done`
      turns True when every assigned partition has.

    ``consumer_options`` go to :func:`~services.bus.consumer` (fetch sizes,
    group timings); auto-commit is always off, fetches are taken whole, and a
    position outside the log resets to its beginning, where the continuity
    check judges it.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        positions: Positions,
        group_id: str | None = None,
        digest: Callable[[KafkaRecord], bytes] = record_digest,
        confirm_reset_ms: int = 5000,
        commit_interval_ms: int | None = None,
        until: Mapping[TopicPartition, int] | Literal["highwater"] | None = None,
        name: str = "oix-follower",
        **consumer_options: Any,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.name = name
        self.confirm_reset_ms = confirm_reset_ms
        self.commit_interval_ms = commit_interval_ms
        self.positioned = asyncio.Event()
        """Set once assigned partitions were first positioned from the caller's positions."""
        self._positions = positions
        self._digest = digest
        self._options = consumer_options
        self._until = until
        self._ends: dict[TopicPartition, int] = dict(until) if isinstance(until, Mapping) else {}
        self._floors: dict[TopicPartition, tuple[int, int]] = {}
        """Where each partition was last seeked to, and when (ms)."""
        self._finished: set[TopicPartition] = set()
        self._subscription: tuple[str | None, tuple[str, ...]] | None = None
        self._wanted: frozenset[TopicPartition] | None = None
        self._explicit: frozenset[TopicPartition] = frozenset()
        self._kafka: AIOKafkaConsumer | None = None
        self._states: dict[TopicPartition, Continuity] = {}
        self._histories: dict[TopicPartition, PartitionHistory] = {}
        self._to_commit: dict[TopicPartition, int] = {}
        self._failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._consuming: _Consuming | None = None
        self._fetched_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------

    def subscribe(self, *, pattern: str | None = None, topics: Iterable[str] = ()) -> None:
        """Follow the partitions ``group_id``'s group assigns of ``topics`` or ``pattern``.

        Call before :meth:`start`.
        """
        if self.group_id is None:
            raise ValueError("subscribe() needs a group_id; use assign() without a group")
        if self._kafka is not None:
            raise RuntimeError("subscribe() before start()")
        self._subscription = (pattern, tuple(topics))

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Follow exactly ``partitions`` (no group); call again when the set changes.

        Partitions kept go on from where they are; new ones are positioned
        from the caller's positions; dropped ones are forgotten.
        """
        wanted = frozenset(partitions)
        if self._kafka is None:
            self._wanted = wanted
            return
        async with self._lock:
            await self._assign(wanted)

    async def start(self) -> None:
        """Connect (and join the group); positioning happens at the first assignment."""
        options = {
            **self._options,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": None,  # whole fetch responses: re-anchoring never cuts one
        }
        kafka = consumer(self.settings, self.bootstrap, group_id=self.group_id, **options)
        if self._subscription is not None:
            pattern, topics = self._subscription
            if pattern is not None:
                kafka.subscribe(pattern=pattern, listener=_Listener(self))
            else:
                kafka.subscribe(topics=list(topics), listener=_Listener(self))
        # Set before start(): a group can assign partitions (and call the listener) at once.
        self._kafka = kafka
        try:
            await start_consumer(kafka, self.settings, self.bootstrap)
        except BaseException:
            self._kafka = None
            raise
        self._fetched_at = time.monotonic()
        if self._wanted is not None:
            async with self._lock:
                await self._assign(self._wanted)
        if self.group_id is not None and self.commit_interval_ms is not None:
            self._committer = asyncio.create_task(self._commit_loop(), name=f"{self.name}-commit")

    async def stop(self) -> None:
        """Leave the group and disconnect (commit first with :meth:`commit` if wanted)."""
        if self._committer is not None:
            await cancel_and_wait(self._committer)
            self._committer = None
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await kafka.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def kafka(self) -> AIOKafkaConsumer:
        """The Kafka consumer (while started)."""
        assert self._kafka is not None, f"{self.name} is not started"
        return self._kafka

    # -- what callers read -----------------------------------------------------------------

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions followed right now."""
        return frozenset(self._states)

    def follows(self, piece: Slice) -> bool:
        """Whether ``piece`` is current: its partition not revoked nor repositioned since."""
        return self._states.get(piece.partition) is piece.token

    def highwater(self, partition: TopicPartition) -> int | None:
        """The broker's high watermark of ``partition`` from the latest fetch response."""
        kafka = self._kafka
        # During a rebalance a partition can leave the assignment before it is revoked here.
        if kafka is None or partition not in kafka.assignment():
            return None
        highwater: int | None = kafka.highwater(partition)
        return highwater

    def status(self) -> list[PartitionStatus]:
        """Every followed partition's position, high watermark, epochs started and stuck time."""
        now = _now_ms()
        kafka = self._kafka
        assigned = set() if kafka is None else kafka.assignment()
        found = []
        for tp, state in sorted(self._states.items()):
            position = state.position
            history = state.history
            found.append(
                PartitionStatus(
                    tp,
                    state.epoch,
                    position,
                    kafka.highwater(tp) if kafka is not None and tp in assigned else None,
                    history.epochs_started,
                    history.stuck_ms(position.next_offset, now),
                ),
            )
        return found

    @property
    def pending(self) -> int:
        """Items waiting in the batch being filled by :meth:`consume` (0 when not consuming)."""
        return 0 if self._consuming is None else self._consuming.pending

    @property
    def done(self) -> bool:
        """With ``until``: every assigned partition reached its end offset."""
        if self._until is None or not self.positioned.is_set():
            return False
        return all(tp in self._finished for tp in self._states)

    # -- one round -------------------------------------------------------------------------

    def idle_ms(self) -> int:
        """Milliseconds since a fetch last returned (since :meth:`start` before the first).

        A consume loop that stops fetching (a write that never returns, a
        rebalance that never ends) shows here, since it sees no high watermark
        that could show its partitions stuck.
        """
        return max(0, round((time.monotonic() - self._fetched_at) * 1000))

    async def fetch(self, timeout_ms: int) -> list[Slice]:
        """Fetch once (waiting up to ``timeout_ms``), check continuity, re-anchor.

        Returns the slices in the order the records were fetched, then slices
        holding only events noticed from high watermarks. Whole fetch
        responses are taken (``fetch_max_bytes`` bounds them), so a record is
        never cut off by re-anchoring.

        Raises:
            BrokerError: the broker refused in a way retrying will not fix.
        """
        if self._failure is not None:
            raise self._failure
        try:
            return await self._fetch(timeout_ms)
        finally:
            self._fetched_at = time.monotonic()

    async def _fetch(self, timeout_ms: int) -> list[Slice]:
        async with self._lock:
            kafka = self.kafka
            if self._subscription is None and not self._explicit:
                # Nothing assigned yet: a fetch would wait for an assignment, not a timeout.
                await asyncio.sleep(timeout_ms / 1000)
                return []
            await self._apply_seeks()
            try:
                fetched = await kafka.getmany(timeout_ms=timeout_ms)
            except KafkaError as exc:
                if not exc.retriable:
                    raise BrokerError(f"{self.name}: the broker refused a fetch: {exc!r}") from exc
                log.warning("fetch failed; retrying", follower=self.name, error=repr(exc))
                await asyncio.sleep(_RETRY_S)
                return []
            now = _now_ms()
            slices = []
            for tp, records in fetched.items():
                admitted = self._admit(tp, records, now)
                if admitted is not None:
                    slices.append(admitted)
            slices.extend(self._observe(now))
            await self._apply_seeks()
            return slices

    def _admit(self, tp: TopicPartition, records: list[Any], now: int) -> Slice | None:
        state = self._states.get(tp)
        if state is None or tp in self._finished:
            return None
        end = self._ends.get(tp)
        if end is not None:
            records = [r for r in records if r.offset < end]
        digest = self._digest
        kept = admit_slice(
            state, [r.offset for r in records], lambda i: partial(digest, records[i]), now
        )
        admitted = [records[i] for i in kept]
        events = state.take_events()
        if not admitted and not events:
            return None
        return Slice(tp, state.epoch, admitted, events, state.position, state)

    def _observe(self, now: int) -> list[Slice]:
        kafka = self.kafka
        assignment = kafka.assignment()
        slices = []
        for tp, state in self._states.items():
            if tp not in assignment:
                continue
            fetched_at = kafka.last_poll_timestamp(tp)
            state.observe_highwater(kafka.highwater(tp), fetched_at, now)
            events = state.take_events()
            if events:
                slices.append(Slice(tp, state.epoch, [], events, state.position, state))
            if self._until is not None:
                self._check_end(tp, state, fetched_at)
        return slices

    def _check_end(self, tp: TopicPartition, state: Continuity, fetched_at: int | None) -> None:
        if tp in self._finished:
            return
        end = self._ends.get(tp)
        if end is None:
            # "highwater": the first answer after the partition was positioned.
            highwater = self.highwater(tp)
            floor = self._floors.get(tp)
            if highwater is None or fetched_at is None or floor is None or fetched_at < floor[1]:
                return
            end = self._ends[tp] = highwater
        position = state.position.next_offset
        if position is None and tp in self._floors:
            position = self._floors[tp][0]
        if position is not None and position >= end:
            self._finished.add(tp)
            self.kafka.pause(tp)
            log.info(
                "partition followed to its end", follower=self.name, partition=str(tp), end=end
            )

    async def _apply_seeks(self) -> None:
        """Move partitions where their continuity checks ask.

        The move itself and telling the check happen with no ``await`` in
        between: records fetched meanwhile are refused (a seek is pending) and
        read again from the new position, never skipped.
        """
        kafka = self.kafka
        starts: dict[TopicPartition, int] = {}
        need_start = [
            tp
            for tp, state in self._states.items()
            if state.pending_seek is not None and state.pending_seek.offset is None
        ]
        if need_start:
            try:
                starts = await kafka.beginning_offsets(need_start)
            except KafkaError as exc:
                log.warning("cannot read log start offsets; retrying", error=repr(exc))
                return
        assignment = kafka.assignment()
        now = _now_ms()
        for tp, state in self._states.items():
            seek = state.pending_seek
            if seek is None or tp not in assignment:
                continue
            offset = seek.offset if seek.offset is not None else starts.get(tp)
            if offset is None:
                continue  # asked for while the start offsets were read; the next round does it
            kafka.seek(tp, offset)
            state.seeked(now, offset)
            self._floors[tp] = (offset, now)

    # -- assignment ------------------------------------------------------------------------

    async def reposition(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Ask the caller's positions again (all followed partitions by default) and seek there.

        For a caller whose store moved under it (another writer); what the
        follower admitted for them and was not stored must be dropped by the
        caller (:meth:`consume` does).
        """
        async with self._lock:
            chosen = set(self.kafka.assignment() if partitions is None else partitions)
            await self._position(chosen)

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._states.pop(tp, None)
            self._finished.discard(tp)
        if self._consuming is not None:
            self._consuming.revoked(revoked)
        log.info("partitions revoked", follower=self.name, partitions=len(revoked))

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            if self._consuming is not None:
                # Its outcome only matters for where the caller's store stands, read next.
                await self._consuming.settled()
            await self._position(assigned)
        except Exception as exc:  # raised again from the next fetch
            log.exception("cannot position assigned partitions", follower=self.name)
            self._failure = exc

    async def _assign(self, wanted: frozenset[TopicPartition]) -> None:
        if wanted == self._explicit and self.positioned.is_set():
            return
        kafka = self.kafka
        dropped = set(self._explicit - wanted)
        if dropped:
            self._revoked(dropped)
        kafka.assign(sorted(wanted))
        self._explicit = wanted
        # A new assignment forgets every fetch position: the partitions kept seek again
        # to where they are, the new ones to the caller's positions.
        for tp, state in self._states.items():
            if tp in wanted:
                state.reseek()
        new = {tp for tp in wanted if tp not in self._states}
        if new and self._consuming is not None:
            await self._consuming.settled()
        await self._position(new)

    async def _position(self, partitions: set[TopicPartition]) -> None:
        if partitions:
            answer = await self._positions(sorted(partitions))
            kafka = self.kafka
            assigned = kafka.assignment()
            now = _now_ms()
            for tp in partitions:
                if tp not in assigned:
                    continue  # taken away while the positions were read
                position = answer.get(tp)
                if position is None:
                    self._states.pop(tp, None)
                    kafka.pause(tp)
                    continue
                history = self._histories.get(tp)
                if history is None:
                    history = self._histories[tp] = PartitionHistory(now)
                self._states[tp] = Continuity(
                    tp.topic,
                    tp.partition,
                    position,
                    confirm_reset_ms=self.confirm_reset_ms,
                    history=history,
                )
                self._finished.discard(tp)
                self._floors.pop(tp, None)
                kafka.resume(tp)
            await self._apply_seeks()
            log.info(
                "partitions positioned from the caller's store",
                follower=self.name,
                partitions=len(partitions),
            )
        self.positioned.set()

    # -- commits, for lag monitoring only ------------------------------------------------------

    def acknowledge(self, positions: Mapping[TopicPartition, Position]) -> None:
        """The caller stored everything up to ``positions``: commit them at the next commit."""
        for tp, position in positions.items():
            if position.next_offset is not None:
                self._to_commit[tp] = position.next_offset

    async def commit(self) -> None:
        """Commit acknowledged offsets to the group (monitoring only; no-op without a group)."""
        if self.group_id is None or self._kafka is None:
            self._to_commit.clear()
            return
        assigned = self._kafka.assignment()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._to_commit.items()
            if tp in assigned
        }
        self._to_commit.clear()
        if not offsets:
            return
        try:
            await self._kafka.commit(offsets)
        except KafkaError as exc:
            log.info("Kafka offset commit failed; it only feeds lag monitoring", error=repr(exc))
            for tp, meta in offsets.items():
                self._to_commit.setdefault(tp, meta.offset)

    async def _commit_loop(self) -> None:
        assert self.commit_interval_ms is not None
        while True:
            await asyncio.sleep(self.commit_interval_ms / 1000)
            await self.commit()

    # -- the consume loop --------------------------------------------------------------------

    async def consume(
        self,
        write: Callable[[Batch[T]], Awaitable[None]],
        stop: asyncio.Event,
        *,
        open_records: Callable[[list[Admitted]], Awaitable[Sequence[T]]],
        limits: BatchLimits,
        weight: Callable[[T], int],
        drain_timeout_s: float = 30.0,
        on_fetched: Callable[[Sequence[Slice]], None] | None = None,
    ) -> None:
        """Fetch, open, batch and write until ``stop`` is set (or :attr:`done`), then drain.

        - ``open_records`` turns admitted records into items, one item per
          record, in order (e.g. decode and verify them in worker processes:
          :class:`~services.bus.OpenerPool`); it runs while the next fetch does.
        - Items and events go into a :class:`~services.bus.Batch`, due at
          ``limits`` (records, bytes by ``weight``, age). ``write`` is called
          with each due batch, one at a time, while the next one fills: it
          must store the items, the events and :attr:`Batch.positions` in
          one transaction, and only if the store's positions are still the
          ones the batch follows; otherwise raise
          :class:`~services.bus.PositionConflictError`: the batch and
          everything opened is dropped and positions are asked again.
          ``write`` retries unavailability itself; any other exception
          stops the loop.
        - After each write its positions are acknowledged (see
          :meth:`acknowledge`). On stop, what is pending is written within
          ``drain_timeout_s`` (the rest is read again next time), then
          acknowledged offsets are committed.
        - ``on_fetched`` is called with the slices of every fetch (metrics, health).

        The follower must be started; stop it afterwards.
        """
        pipeline = Pipeline(
            self,
            write,
            open_records=open_records,
            limits=limits,
            weight=weight,
            on_fetched=on_fetched,
        )
        self._consuming = pipeline
        try:
            await pipeline.run(stop, drain_timeout_s)
        finally:
            self._consuming = None
