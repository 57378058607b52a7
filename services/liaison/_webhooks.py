"""Webhooks: reports delivered to the agency's own systems, signed, at least once.

A report's deliveries are queued in the store (``liaison_outbox``) in the
same transaction as the report, so none is lost between the two. The
:class:`Deliverer` POSTs each as JSON with a timestamped HMAC-SHA256
signature over ``"<timestamp>.<body>"``::

    OIX-Webhook-Id: <delivery id>          the receiver's dedupe key (one per report
                                           and endpoint; every retry repeats it)
    OIX-Webhook-Timestamp: <unix seconds>
    OIX-Webhook-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>

Any 2xx is delivered; anything else (or no answer) is tried again after an
exponential backoff with full jitter, and after ``webhook_max_attempts``
the delivery is dead-lettered: shown by the API, raised as an alert,
and retriable by an officer. What may be forwarded at all is
:func:`~services.liaison._handling.webhook_refusal`'s rule.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from services.bus import get_logger
from services.liaison._endpoints import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Endpoint,
    signature,
)
from services.liaison._handling import webhook_refusal
from services.liaison._metrics import LiaisonMetrics
from services.liaison._received import Facts
from services.liaison._signal import ChangeSignal
from services.liaison._store import Delivery, LiaisonStore, now_ms

log = get_logger(__name__)

_NAMESPACE = uuid.UUID("5c8a7d1e-8f0b-4f5e-9a51-0b6e2a1c3f1d")
_LEASE_MS = 60_000
_CLAIM = 50


class Router:
    """Decides which endpoints get a report, and builds the deliveries' bodies."""

    def __init__(self, agency: str, endpoints: list[Endpoint]) -> None:
        self.agency = agency
        self.endpoints = [e for e in endpoints if e.agency == agency]

    def __call__(self, facts: Facts, event_status: str) -> list[Delivery]:
        """The deliveries of one new report (none when no endpoint may have it)."""
        found = []
        for endpoint in self.endpoints:
            if endpoint.report_types and facts.report_type not in endpoint.report_types:
                continue
            refusal = webhook_refusal(
                agency=self.agency,
                owner=endpoint.owner,
                tlp=facts.tlp,
                handling=facts.handling,
                releasable_to=facts.releasable_to,
            )
            if refusal:
                log.info(
                    "not forwarded to a webhook",
                    endpoint=endpoint.name,
                    message_id=facts.message_id,
                    reason=refusal,
                )
                continue
            delivery_id = str(
                uuid.uuid5(_NAMESPACE, f"{endpoint.name}/{facts.originator}/{facts.message_id}")
            )
            body = orjson.dumps(
                {
                    "delivery_id": delivery_id,
                    "agency": self.agency,
                    "originator": facts.originator,
                    "message_id": facts.message_id,
                    "event_id": facts.event_id,
                    "report_type": facts.report_type,
                    "mode": facts.mode,
                    "exercise": facts.mode != "ACTUAL",
                    "tlp": facts.tlp,
                    "handling": list(facts.handling),
                    "event_status": event_status,
                    "title": facts.title,
                    "report": orjson.Fragment(facts.content),
                }
            )
            found.append(Delivery(endpoint.name, delivery_id, body.decode()))
        return found


class Deliverer:
    """Delivers queued webhooks until stopped; several replicas share the queue by leases."""

    def __init__(
        self,
        store: LiaisonStore,
        agency: str,
        endpoints: list[Endpoint],
        *,
        metrics: LiaisonMetrics,
        signal: ChangeSignal,
        wake: ChangeSignal,
        max_attempts: int,
        backoff_ms: int,
        max_backoff_ms: int,
        timeout_s: float,
        on_dead: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.agency = agency
        self.endpoints = {e.name: e for e in endpoints if e.agency == agency}
        self.metrics = metrics
        self.signal = signal
        """Told when a delivery is dead-lettered (the live streams show it)."""
        self.wake = wake
        """Told when deliveries were queued or a dead letter put back."""
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.on_dead = on_dead
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set.

        Each round first reads when the next delivery is due and claims (a write)
        only then: on SQLite a claim per committed batch held the write lock the
        consumer needed, and its batches waited on SQLite's busy backoff.
        """
        try:
            while not stop.is_set():
                upcoming: int | None = None
                done = 0
                try:
                    upcoming = await self.store.next_delivery_at(self.agency)
                    if upcoming is not None and upcoming <= now_ms():
                        done = await self.deliver_due()
                except Exception:
                    log.exception("webhook delivery round failed; trying again")
                if done:
                    continue
                wait = 1.0
                if upcoming is not None:
                    wait = min(wait, max(0.0, (upcoming - now_ms()) / 1000))
                waiting = asyncio.ensure_future(self.wake.wait(wait))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                stopping.cancel()
        finally:
            await self._http.aclose()

    async def deliver_due(self) -> int:
        """Attempt every delivery due now; returns how many were attempted."""
        rows = await self.store.claim_deliveries(self.agency, now_ms(), _CLAIM, _LEASE_MS)
        if rows:
            await asyncio.gather(*(self._attempt(row) for row in rows))
        return len(rows)

    async def _attempt(self, row: Any) -> None:
        endpoint = self.endpoints.get(row.endpoint)
        attempts = row.attempts + 1
        error: str | None
        if endpoint is None:
            error = f"no webhook named {row.endpoint!r} is configured any more"
        else:
            error = await self._post(endpoint, row.delivery_id, row.payload.encode())
        at = now_ms()
        if error is None:
            self.metrics.webhook_deliveries.labels(row.endpoint, "delivered").inc()
            await self.store.delivery_done(
                self.agency,
                row.delivery_id,
                status="delivered",
                attempts=attempts,
                next_attempt_at=at,
                error=None,
                at=at,
            )
            return
        if attempts >= self.max_attempts:
            self.metrics.webhook_deliveries.labels(row.endpoint, "dead").inc()
            log.error(
                "webhook delivery dead-lettered",
                endpoint=row.endpoint,
                delivery_id=row.delivery_id,
                attempts=attempts,
                error=error,
            )
            await self.store.delivery_done(
                self.agency,
                row.delivery_id,
                status="dead",
                attempts=attempts,
                next_attempt_at=at,
                error=error,
                at=at,
            )
            self.signal.changed()
            return
        self.metrics.webhook_deliveries.labels(row.endpoint, "failed").inc()
        # Exponential backoff with full jitter: replicas and retries spread out.
        ceiling = min(self.max_backoff_ms, self.backoff_ms * 2 ** (attempts - 1))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311  # jitter, not a secret
        log.info(
            "webhook delivery failed; will retry",
            endpoint=row.endpoint,
            delivery_id=row.delivery_id,
            attempts=attempts,
            retry_in_ms=round(delay),
            error=error,
        )
        await self.store.delivery_done(
            self.agency,
            row.delivery_id,
            status="pending",
            attempts=attempts,
            next_attempt_at=at + round(delay),
            error=error,
            at=at,
        )

    async def _post(self, endpoint: Endpoint, delivery_id: str, body: bytes) -> str | None:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: delivery_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(endpoint.secret, timestamp, body),
        }
        try:
            response = await self._http.post(endpoint.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"no answer: {exc!r}"
        if 200 <= response.status_code < 300:  # noqa: PLR2004
            return None
        return f"HTTP {response.status_code}"
