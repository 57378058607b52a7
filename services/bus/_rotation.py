"""Signing-key lifecycle: rotating a party's key, and refusing the demo keys in production.

Rotation overlaps two keys. ``oix keys rotate PARTY`` writes a new private key
and proposes the agreement change: the new key is added, and the old one gets
``not_after`` = now + overlap. Receivers accept a record signed with a key only
when the record's **signed** ``created_at`` lies in that key's window:

- the signed creation time cannot be changed by anyone but the key holder, so
  relays, mirrors and replays cannot move a record across the boundary;
- it gives the same answer on every replay, years later: judged by receive
  time, every record of a retired key would turn invalid the day it expired;
- the Kafka timestamp is not signed (the producer sets CreateTime, a re-drive
  or mirror changes it), so it proves nothing about the signer.

The cost: the holder of an old key could backdate a record into its window.
That is a compromise, not a rotation: remove the key from the agreement (its
records then verify as ``unknown_key``). Retired keys stay in the agreement
with their ``not_after`` so that history keeps verifying.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.bus._agreement import Agreement
from services.bus._errors import ConfigError, SigningError
from services.bus._files import private_dir
from services.bus._settings import repo_root
from services.bus._signing import KeyPair, decode_public_key, generate_key_pair

DEMO_KEYS_DIR = Path("deploy") / "keys"


@cache
def demo_public_keys() -> frozenset[bytes]:
    """Public keys whose private halves ship with OIX (``deploy/keys``): demo only."""
    raw: set[bytes] = set()
    for path in sorted((repo_root() / DEMO_KEYS_DIR).glob("*.pem")):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, Ed25519PrivateKey):
            raw.add(
                key.public_key().public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                )
            )
    return frozenset(raw)


def refuse_demo_keys(agreement: Agreement, source: str) -> None:
    """Raise when the agreement trusts a key whose private half is public (OIX_ENV=production).

    A signer can only use keys the agreement lists, so this also keeps the demo
    private keys from signing anything.

    Raises:
        ConfigError: naming every demo key the agreement lists.
    """
    demo = demo_public_keys()
    found = [
        f"parties.{code}.keys.{key.id}"
        for code, party in agreement.parties.items()
        for key in party.keys
        if decode_public_key(key.public_key, where=f"{code}/{key.id}") in demo
    ]
    if found:
        raise ConfigError(
            f"OIX_ENV=production: {source} lists demo keys whose private keys are published "
            f"in deploy/keys: {', '.join(found)}. Generate real keys (`oix keys rotate PARTY`) "
            "and put their public keys in the agreement",
        )


def write_private_key(keys_dir: Path, key_id: str, pem: bytes) -> Path:
    """Write a private key file ``<keys_dir>/<key_id>.pem``, mode 0600, never overwriting.

    Raises:
        SigningError: the file exists, or cannot be written.
    """
    path = keys_dir / f"{key_id}.pem"
    try:
        private_dir(keys_dir)
        # O_EXCL: a private key is never overwritten; the mode is set at creation.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path} exists; refusing to overwrite a private key") from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot write the private key: {exc.strerror}") from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return path


@dataclass(frozen=True, slots=True)
class Rotation:
    """A new key for one party, and the old keys it retires."""

    party: str
    key_id: str
    pair: KeyPair
    retired: tuple[str, ...]
    """Key ids that get ``not_after``."""
    not_after: datetime

    @property
    def not_after_text(self) -> str:
        """``not_after`` as the agreement spells it (UTC, ISO 8601)."""
        return self.not_after.isoformat().replace("+00:00", "Z")


def next_key_id(agreement: Agreement, party: str, now: datetime) -> str:
    """``<PARTY>-<year>-<n>``, n one more than the party's highest of that year."""
    taken = {key.id for p in agreement.parties.values() for key in p.keys}
    pattern = re.compile(rf"^{re.escape(party)}-{now.year}-(\d+)$")
    numbers = [int(m.group(1)) for key_id in taken if (m := pattern.match(key_id))]
    number = max(numbers, default=0) + 1
    while f"{party}-{now.year}-{number}" in taken:
        number += 1
    return f"{party}-{now.year}-{number}"


def plan_rotation(
    agreement: Agreement,
    party: str,
    now: datetime,
    overlap: timedelta,
    key_id: str | None = None,
) -> Rotation:
    """A new key pair for ``party`` and the keys it retires after ``overlap``.

    Raises:
        SigningError: unknown party, a taken key id, or a rotation that would leave
            three keys valid at once.
    """
    if party not in agreement.parties:
        known = ", ".join(sorted(agreement.parties))
        raise SigningError(f"{party} is not a party to the agreement ({known})")
    keys = agreement.parties[party].keys
    kid = key_id or next_key_id(agreement, party, now)
    if any(key.id == kid for p in agreement.parties.values() for key in p.keys):
        raise SigningError(f"key id {kid!r} is already in the agreement")
    retired = tuple(key.id for key in keys if key.not_after is None)
    still_valid = [key.id for key in keys if key.not_after is not None and key.valid_at(now)]
    if still_valid:
        raise SigningError(
            f"{party} is still in the overlap of an earlier rotation ({', '.join(still_valid)} "
            "valid until its not_after): rotate again after that",
        )
    return Rotation(
        party,
        kid,
        generate_key_pair(),
        retired,
        (now + overlap).replace(microsecond=0),
    )


def rotated_agreement(text: str, rotation: Rotation) -> str | None:
    """The agreement's YAML text with ``rotation`` applied, comments and layout kept.

    Returns None when the party's keys are not written in the usual block style
    (``- id: …`` items under ``keys:``); the caller then shows the new block instead.
    """
    lines = text.splitlines(keepends=True)
    party_at = _find(lines, rf"^(\s+){re.escape(rotation.party)}:\s*(#.*)?$", 0)
    if party_at is None:
        return None
    party_indent = _indent(lines[party_at])
    end = _block_end(lines, party_at, party_indent)
    keys_at = _find(lines, r"^\s+keys:\s*(#.*)?$", party_at + 1, end)
    if keys_at is None:
        return None
    items = [
        i
        for i in range(keys_at + 1, _block_end(lines, keys_at, _indent(lines[keys_at])))
        if re.match(r"^\s*- id:", lines[i])
    ]
    if not items:
        return None
    dash = _indent(lines[items[0]])
    field = " " * (dash + 2)
    inserts: dict[int, list[str]] = {}
    for start in items:
        key_id = lines[start].split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
        last = _block_end(lines, start, dash) - 1
        if key_id in rotation.retired:
            inserts.setdefault(last, []).append(f"{field}not_after: {rotation.not_after_text}\n")
    tail = _block_end(lines, items[-1], dash) - 1
    inserts.setdefault(tail, []).extend(
        [
            f"{' ' * dash}- id: {rotation.key_id}\n",
            f"{field}public_key: {rotation.pair.public_b64}\n",
        ],
    )
    result: list[str] = []
    for index, line in enumerate(lines):
        result.append(line if line.endswith("\n") else line + "\n")
        result.extend(inserts.get(index, []))
    return "".join(result)


def key_block(agreement: Agreement, rotation: Rotation) -> str:
    """The party's ``keys:`` list after ``rotation``, as YAML to paste."""
    out = ["    keys:\n"]
    for key in agreement.parties[rotation.party].keys:
        out += [f"      - id: {key.id}\n", f"        public_key: {key.public_key}\n"]
        if key.not_before is not None:
            out.append(f"        not_before: {key.not_before.isoformat()}\n")
        if key.id in rotation.retired:
            out.append(f"        not_after: {rotation.not_after_text}\n")
        elif key.not_after is not None:
            out.append(f"        not_after: {key.not_after.isoformat()}\n")
    out += [
        f"      - id: {rotation.key_id}\n",
        f"        public_key: {rotation.pair.public_b64}\n",
    ]
    return "".join(out)


def unified_diff(path: str, before: str, after: str) -> str:
    """A unified diff of the agreement file, for review and ``patch -p0``."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=path,
            tofile=path,
        ),
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _find(lines: list[str], pattern: str, start: int, end: int | None = None) -> int | None:
    regex = re.compile(pattern)
    for index in range(start, len(lines) if end is None else end):
        if regex.match(lines[index].rstrip("\n")):
            return index
    return None


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the last line nested deeper than ``indent`` below ``start``."""
    end = start + 1
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _indent(lines[index]) <= indent:
            break
        end = index + 1
    return end
