"""Officers and their sessions.

Officers are listed per agency in a YAML file with argon2id password hashes
(``oix liaison officer add``); the file is re-read when it changes, so a
removed officer cannot sign in again without a restart. Signing in makes a
session: a random token (256 bits) of which the store keeps only the
SHA-256, bound to the officer and the agency. The browser console gets it
as an HttpOnly, SameSite=Strict cookie plus a CSRF token it must echo in
``X-CSRF-Token`` on every state-changing request; API clients (``oix
feed``) get it as a bearer token. Every query the session makes is scoped by
its agency.

An OIDC provider would replace only the password check: an authorization
code flow whose callback verifies the ID token (issuer, audience, signature
against the provider's JWKS) and maps a claim (say ``oix_agency``) to the
agency, then creates the same session; everything downstream stays.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.bus import (
    AGENCY_CODE_PATTERN,
    ConfigError,
    get_logger,
    read_yaml_list,
    write_yaml_list,
)

log = get_logger(__name__)

SESSION_PREFIX = "oixls_"
"""Marks liaison session tokens, so a leaked one is findable."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_AGENCY = re.compile(AGENCY_CODE_PATTERN)
_HEADER = (
    "# OIX liaison officers: argon2id password hashes only. A password is shown once,\n"
    "# when `oix liaison officer add` makes it; remove an officer by deleting the entry.\n"
)
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """What an unknown officer's password is checked against (so it costs the same).

    Made once, when the first registry opens: an argon2 hash takes about 130 ms of
    CPU on purpose, which every ``oix`` command and worker process importing this
    module paid when it was made at import.
    """
    return _HASHER.hash("no such officer")


@dataclass(frozen=True, slots=True)
class Officer:
    """One officer: agency, name and password hash."""

    agency: str
    name: str
    argon2: str
    created_at: str


def read_officers(path: Path) -> list[Officer]:
    """Every officer of ``path``; a missing file has none.

    Raises:
        ConfigError: the file is not valid YAML or an entry is malformed (names which).
    """
    items = read_yaml_list(path, "officers", "the officers file")
    return [_officer(item, f"{path}: officers[{i}]") for i, item in enumerate(items)]


def _officer(item: Any, where: str) -> Officer:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with agency, name and argon2")
    agency, name, digest = item.get("agency"), item.get("name"), item.get("argon2")
    if not isinstance(agency, str) or not _AGENCY.fullmatch(agency):
        raise ConfigError(f"{where}.agency: {agency!r} is not an agency code like LV-VRS")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: {name!r} is not an officer name (letters, digits, ._@-)")
    if not isinstance(digest, str) or not digest.startswith("$argon2"):
        raise ConfigError(f"{where}.argon2: not an argon2 hash ($argon2id$…)")
    return Officer(agency, name, digest, str(item.get("created_at", "")))


def write_officers(path: Path, officers: list[Officer]) -> None:
    """Replace the officers file atomically, readable by its owner only, in a 0700 directory."""
    items = [
        {"agency": o.agency, "name": o.name, "argon2": o.argon2, "created_at": o.created_at}
        for o in officers
    ]
    write_yaml_list(path, "officers", items, _HEADER)


def new_password() -> str:
    """A generated password: 16 random URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


def add_officer(path: Path, agency: str, name: str, password: str) -> None:
    """Add (or replace the password of) ``agency``'s officer ``name``.

    Raises:
        ConfigError: the agency code or name is malformed, or the password too short.
    """
    if len(password) < 12:  # noqa: PLR2004
        raise ConfigError("the password is shorter than 12 characters")
    entry = _officer(
        {
            "agency": agency,
            "name": name,
            "argon2": _HASHER.hash(password),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "new officer",
    )
    kept = [o for o in read_officers(path) if (o.agency, o.name) != (agency, name)]
    write_officers(path, [*kept, entry])


def remove_officer(path: Path, agency: str, name: str) -> None:
    """Remove an officer.

    Raises:
        ConfigError: there is no such officer.
    """
    officers = read_officers(path)
    kept = [o for o in officers if (o.agency, o.name) != (agency, name)]
    if len(kept) == len(officers):
        raise ConfigError(f"{path}: {agency} has no officer {name!r}")
    write_officers(path, kept)


class OfficerRegistry:
    """The officers of one file; re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dummy = _dummy_hash()  # now, not at the first unknown name's login
        self._stamp: tuple[int, int] | None = None
        self._officers: dict[tuple[str, str], Officer] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._officers = {(o.agency, o.name): o for o in read_officers(self.path)}
            self._stamp = stamp

    def count(self, agency: str) -> int:
        """How many officers ``agency`` has."""
        return sum(1 for a, _ in self._officers if a == agency)

    async def verify(self, agency: str, name: str, password: str) -> bool:
        """Whether ``name`` is an officer of ``agency`` with this password.

        The hash is checked off the event loop (it takes tens of milliseconds
        on purpose); an unknown name costs the same as a wrong password.
        """
        try:
            self._reload()
        except ConfigError as exc:
            log.warning(
                "officers file unreadable; keeping the officers read before", error=str(exc)
            )
        officer = self._officers.get((agency, name))
        digest = officer.argon2 if officer is not None else self._dummy
        try:
            await asyncio.to_thread(_HASHER.verify, digest, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return officer is not None


def new_token() -> str:
    """A fresh session token."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a session token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
