"""What the services of ``oix up`` offer each other, without importing each other.

A service publishes what it offers under a typed :class:`Offer` and a key
(an agency code, say); another awaits it. Services never import each
other (the layers forbid it), so the offer's type lives here, in the
hosting contract: :data:`PUBLISHING` is how a gateway tells the liaison
service of its agency where and with which token to publish.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from services.bus import wait_set

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Offer(Generic[T]):
    """The name of something a service of ``oix up`` offers, and (as a type) what it is."""

    name: str


@dataclass(frozen=True, slots=True)
class PublishingPath:
    """An agency's publishing path: its gateway's URL and a bearer token for it."""

    agency: str
    url: str
    token: str


PUBLISHING: Offer[PublishingPath] = Offer("publishing")
"""A gateway's offer, keyed by its agency: where that agency's reports are published."""


class Offers:
    """The offers of one ``oix up``: published by one hook, awaited by others."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], Any] = {}
        self._changed = asyncio.Event()

    def publish(self, offer: Offer[T], key: str, value: T) -> None:
        """Offer ``value`` under ``offer`` and ``key``."""
        self._values[(offer.name, key)] = value
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def get(self, offer: Offer[T], key: str) -> T | None:
        """What is offered under ``offer`` and ``key`` now, if anything."""
        value: T | None = self._values.get((offer.name, key))
        return value

    async def wait(self, offer: Offer[T], key: str, timeout: float) -> T | None:
        """What is offered under ``offer`` and ``key``, waiting up to ``timeout`` seconds for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (value := self.get(offer, key)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await wait_set(self._changed, remaining)
        return value
