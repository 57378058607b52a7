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
import hashlib
import hmac
import os
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from services.bus import AGENCY_CODE_PATTERN, ConfigError, get_logger
from services.liaison._handling import webhook_refusal
from services.liaison._metrics import LiaisonMetrics
from services.liaison._received import Facts
from services.liaison._signal import ChangeSignal
from services.liaison._store import Delivery, LiaisonStore, now_ms

log = get_logger(__name__)

ID_HEADER = "OIX-Webhook-Id"
TIMESTAMP_HEADER = "OIX-Webhook-Timestamp"
SIGNATURE_HEADER = "OIX-Webhook-Signature"
_NAMESPACE = uuid.UUID("5c8a7d1e-8f0b-4f5e-9a51-0b6e2a1c3f1d")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_AGENCY = re.compile(AGENCY_CODE_PATTERN)
_OWNER = re.compile(r"^[A-Z]{2}-[A-Z0-9]{2,12}(/[A-Za-z0-9._-]{1,64})?$")
_LEASE_MS = 60_000
_CLAIM = 50
_HEADER = (
    "# OIX liaison webhooks: the agency systems reports are delivered to. The secrets\n"
    "# sign each delivery (HMAC-SHA256); keep this file readable by the service only.\n"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One agency system that receives reports."""

    agency: str
    name: str
    url: str
    secret: str
    owner: str
    """The organisation the system belongs to: the agency itself, or another (handling rule)."""
    report_types: tuple[str, ...] = ()
    """Only these types (all when empty)."""


def read_endpoints(path: Path) -> list[Endpoint]:
    """Every endpoint of ``path``; a missing file has none.

    Raises:
        ConfigError: the file is not valid YAML or an entry is malformed (names which).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the webhooks file: {exc.strerror}") from exc
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    items = data.get("webhooks") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a mapping with a 'webhooks' list")
    return [_endpoint(item, f"{path}: webhooks[{i}]") for i, item in enumerate(items)]


def _endpoint(item: Any, where: str) -> Endpoint:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with agency, name, url and secret")
    agency, name, url, secret = (item.get(k) for k in ("agency", "name", "url", "secret"))
    owner = item.get("owner", agency)
    types = item.get("report_types") or []
    if not isinstance(agency, str) or not _AGENCY.fullmatch(agency):
        raise ConfigError(f"{where}.agency: {agency!r} is not an agency code like LV-VRS")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: {name!r} is not a name (lower-case letters, digits, ._-)")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: {url!r} is not an http(s) URL")
    if not isinstance(secret, str) or len(secret) < 16:  # noqa: PLR2004
        raise ConfigError(f"{where}.secret: at least 16 characters")
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise ConfigError(f"{where}.owner: {owner!r} is not an agency code (optionally /unit)")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where}.report_types: a list of report type names")
    return Endpoint(agency, name, url, secret, owner, tuple(types))


def add_endpoint(
    path: Path,
    agency: str,
    name: str,
    url: str,
    *,
    owner: str | None,
    report_types: list[str],
) -> str:
    """Add a webhook endpoint; returns its new secret (shown once).

    Raises:
        ConfigError: a malformed value, or the name is taken for this agency.
    """
    endpoints = read_endpoints(path)
    if any(e.agency == agency and e.name == name for e in endpoints):
        raise ConfigError(f"{path}: {agency} already has a webhook named {name!r}")
    secret = secrets.token_urlsafe(32)
    entry = _endpoint(
        {
            "agency": agency,
            "name": name,
            "url": url,
            "secret": secret,
            "owner": owner or agency,
            "report_types": report_types,
        },
        "new webhook",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "webhooks": [
            {
                "agency": e.agency,
                "name": e.name,
                "url": e.url,
                "secret": e.secret,
                "owner": e.owner,
                "report_types": list(e.report_types),
            }
            for e in [*endpoints, entry]
        ]
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(_HEADER)
        yaml.safe_dump(body, out, sort_keys=False)
    temporary.replace(path)
    return secret


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``OIX-Webhook-Signature`` value of a delivery."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


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
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.on_dead = on_dead
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set."""
        try:
            while not stop.is_set():
                try:
                    done = await self.deliver_due()
                except Exception:
                    log.exception("webhook delivery round failed; trying again")
                    done = 0
                if done:
                    continue
                wait = 1.0
                try:
                    upcoming = await self.store.next_delivery_at(self.agency)
                except Exception:  # noqa: BLE001  # the next round says it
                    upcoming = None
                if upcoming is not None:
                    wait = min(wait, max(0.0, (upcoming - now_ms()) / 1000))
                waiting = asyncio.ensure_future(self.signal.wait(wait))
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
