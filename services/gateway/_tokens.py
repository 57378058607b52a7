"""Bearer tokens of agency systems, kept only as SHA-256 hashes in a YAML file.

A token is 256 random bits, shown once when it is created. Because it is that
random, a plain SHA-256 of it cannot be brute-forced, and a deliberately slow
password hash would cost milliseconds per request for nothing. The file says
which agency each token publishes for; the gateway re-reads it when it
changes, so a revoked token stops working without a restart.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.bus import (
    AGENCY_CODE_PATTERN,
    ConfigError,
    get_logger,
    read_yaml_list,
    write_yaml_list,
)

log = get_logger(__name__)

TOKEN_PREFIX = "oixgw_"  # noqa: S105  # a marker that makes leaked tokens findable, no secret
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AGENCY = re.compile(AGENCY_CODE_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEADER = (
    "# OIX gateway bearer tokens: SHA-256 hashes only. A token is shown once, when\n"
    "# `oix gateway token create` makes it; revoke one by deleting its entry.\n"
)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: a recognisable prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One stored token: who uses it, for which agency, and its hash."""

    name: str
    agency: str
    sha256: str
    created_at: str


def read_tokens(path: Path) -> list[TokenEntry]:
    """Every token entry of ``path``; a missing file has none.

    Raises:
        ConfigError: the file is not valid YAML or an entry is malformed (names which).
    """
    items = read_yaml_list(path, "tokens", "the token file")
    return [_entry(item, f"{path}: tokens[{index}]") for index, item in enumerate(items)]


def _entry(item: Any, where: str) -> TokenEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with name, agency and sha256")
    name, agency, digest = item.get("name"), item.get("agency"), item.get("sha256")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: {name!r} is not a token name (letters, digits, ._-)")
    if not isinstance(agency, str) or not _AGENCY.fullmatch(agency):
        raise ConfigError(f"{where}.agency: {agency!r} is not an agency code like LT-VSAT")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ConfigError(f"{where}.sha256: not a hex SHA-256 (64 lower-case hex digits)")
    return TokenEntry(name, agency, digest, str(item.get("created_at", "")))


def write_tokens(path: Path, entries: list[TokenEntry]) -> None:
    """Replace the token file atomically, readable by its owner only, in a 0700 directory."""
    items = [
        {"name": e.name, "agency": e.agency, "sha256": e.sha256, "created_at": e.created_at}
        for e in entries
    ]
    write_yaml_list(path, "tokens", items, _HEADER)


def create_token(path: Path, agency: str, name: str) -> str:
    """Add a token for ``agency`` under ``name`` to ``path``; returns the token (shown once).

    Raises:
        ConfigError: the name is taken or invalid, or the agency code is malformed.
    """
    entries = read_tokens(path)
    if any(e.name == name for e in entries):
        raise ConfigError(f"{path}: a token named {name!r} exists; revoke it or pick another name")
    token = new_token()
    entry = _entry(
        {
            "name": name,
            "agency": agency,
            "sha256": hash_token(token),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "new token",
    )
    write_tokens(path, [*entries, entry])
    return token


def revoke_token(path: Path, name: str) -> None:
    """Remove the token called ``name`` from ``path``.

    Raises:
        ConfigError: there is no token with that name.
    """
    entries = read_tokens(path)
    kept = [e for e in entries if e.name != name]
    if len(kept) == len(entries):
        raise ConfigError(f"{path}: no token named {name!r}")
    write_tokens(path, kept)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the token's name and the agency it publishes for."""

    name: str
    agency: str


class TokenRegistry:
    """Looks bearer tokens up by hash; re-reads the file at most once a second when it changed."""

    def __init__(self, path: Path, recheck_every: float = 1.0) -> None:
        self.path = path
        self._recheck_every = recheck_every
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, TokenEntry] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._by_hash = {e.sha256: e for e in read_tokens(self.path)}
            self._stamp = stamp

    def agencies(self) -> set[str]:
        """Agencies that have at least one token."""
        return {e.agency for e in self._by_hash.values()}

    def lookup(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None for an unknown token."""
        now = time.monotonic()
        if now - self._checked >= self._recheck_every:
            self._checked = now
            try:
                self._reload()
            except ConfigError as exc:
                # A half-edited file must not lock every client out: keep the
                # tokens last read until the file is valid again.
                log.warning("token file unreadable; keeping the tokens read before", error=str(exc))
        # The dict is keyed by the SHA-256 of the token, so a lookup's timing
        # tells an attacker nothing about any stored token.
        entry = self._by_hash.get(hash_token(token))
        return Caller(entry.name, entry.agency) if entry is not None else None
