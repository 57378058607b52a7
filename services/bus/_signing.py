"""Ed25519 signatures over encoded values, and the keys that make them.

Keys are kept in the interoperable formats of PyCA ``cryptography`` (PKCS#8 PEM
for private keys, raw 32-byte base64 for public keys in the agreement). The
signing and verifying itself runs in libsodium (PyNaCl): on this hardware it
verifies twice as fast as OpenSSL, and Ed25519 signatures are deterministic,
so both libraries produce identical bytes (a test proves it).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.bus._errors import SigningError

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32


class SignatureStatus(StrEnum):
    """What verifying a record against the agreement's keys found."""

    VALID = "valid"
    """Signed by the key of the originator its decoded content names: the only trusted status."""
    INVALID = "invalid"
    """A bad signature, or one by another party than the originator (content or header)."""
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    UNVERIFIED_ORIGIN = "unverified_origin"
    """The signature checks out against a party's key, but the signed content cannot be
    decoded, so the originator it names is unproven (e.g. a schema not released yet)."""


@dataclass(slots=True)  # not frozen: it costs 0.5 µs per record on the hot path
class Verification:
    """The outcome of verifying one record, with the reason when it is not valid."""

    status: SignatureStatus
    reason: str = ""
    party: str | None = None
    """The party whose key made a signature that checks out, when one did."""

    @property
    def ok(self) -> bool:
        """True only for a valid signature by the originator's own key."""
        return self.status is SignatureStatus.VALID


def decode_public_key(text: str, *, where: str) -> bytes:
    """Raw 32-byte Ed25519 public key from its base64 form."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"{where}: public key is not valid base64: {exc}") from exc
    if len(raw) != PUBLIC_KEY_SIZE:
        raise SigningError(
            f"{where}: an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, this one is {len(raw)}",
        )
    return raw


class Signer:
    """Signs values with one party's private key."""

    def __init__(self, party: str, key_id: str, private_key: bytes) -> None:
        self.party = party
        self.key_id = key_id
        self._key = nacl.signing.SigningKey(private_key)
        # libsodium's 64-byte secret key (seed, then public key), for crypto_sign.
        self._secret = bytes(self._key) + bytes(self._key.verify_key)
        self.key_id_bytes = key_id.encode()

    @property
    def public_key(self) -> bytes:
        """The raw public key matching this signer."""
        return bytes(self._key.verify_key)

    def sign(self, value: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``value``."""
        # The binding directly: SigningKey.sign wraps the result in objects we drop.
        return nacl.bindings.crypto_sign(value, self._secret)[:SIGNATURE_SIZE]

    @classmethod
    def from_pem_file(cls, party: str, key_id: str, path: Path) -> Signer:
        """Load a PKCS#8 PEM private key file as written by ``oix keys generate``."""
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SigningError(f"{path}: cannot load private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{path}: not an Ed25519 private key")
        return cls(party, key_id, key.private_bytes_raw())


def key_file_exposure(path: Path) -> str | None:
    """Why others than its owner can read or change the private key file ``path``, or None.

    As ssh refuses such a key file. Like PostgreSQL for its key file, a file
    owned by root may be readable by its group: how a Kubernetes Secret volume
    with an ``fsGroup`` mounts it (mode 0440) for a non-root service.

    Raises:
        SigningError: the file cannot be examined.
    """
    try:
        found = path.stat()
    except OSError as exc:
        raise SigningError(f"{path}: cannot examine the private key file: {exc.strerror}") from exc
    mode = found.st_mode & 0o777
    allowed = 0o040 if found.st_uid == 0 else 0
    exposed = mode & 0o077 & ~allowed
    if not exposed:
        return None
    who = " and ".join(
        name for name, bits in (("its group", 0o070), ("others", 0o007)) if exposed & bits
    )
    return f"mode {mode:04o}: {who} can read or change it"


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the agreement lists for one party."""

    party: str
    key_id: str
    public_key: bytes
    not_before: datetime | None = None
    not_after: datetime | None = None
    """Validity window (rotation): records created outside it are not accepted with this key."""


class Verifier:
    """Verifies signatures against the public keys the agreement lists."""

    def __init__(self, keys: list[TrustedKey]) -> None:
        self._keys = {
            key.key_id: (key.party, nacl.signing.VerifyKey(key.public_key)) for key in keys
        }
        self._windows = {
            key.key_id: (key.not_before, key.not_after)
            for key in keys
            if key.not_before is not None or key.not_after is not None
        }

    def verify(
        self,
        value: bytes,
        signature: bytes | None,
        key_id: str | None,
        originator: str | None,
        signed_at: datetime | None = None,
    ) -> Verification:
        """Check that ``signature`` over ``value`` was made by ``originator``'s own key.

        ``originator`` is the one named in the signed content; a valid signature
        by another party's key is invalid here, since nobody may sign for another.
        ``signed_at`` is the signed ``created_at``: a key with a validity window
        (rotation) is accepted only for records created inside it.
        ``None`` means the content could not be read: then a signature that checks
        out is :attr:`SignatureStatus.UNVERIFIED_ORIGIN`, never valid.
        """
        if not signature and not key_id:
            return Verification(SignatureStatus.UNSIGNED, "no signature header")
        if not signature or not key_id:
            return Verification(
                SignatureStatus.INVALID,
                "signature and key id must come together",
            )
        entry = self._keys.get(key_id)
        if entry is None:
            return Verification(
                SignatureStatus.UNKNOWN_KEY,
                f"key id {key_id!r} is not in the agreement",
            )
        party, verify_key = entry
        if len(signature) != SIGNATURE_SIZE:
            return Verification(
                SignatureStatus.INVALID,
                f"signature is {len(signature)} bytes, not 64",
            )
        try:
            verify_key.verify(value, signature)
        except nacl.exceptions.BadSignatureError:
            return Verification(SignatureStatus.INVALID, "signature does not match the value")
        if originator is None:
            return Verification(
                SignatureStatus.UNVERIFIED_ORIGIN,
                f"signed with {party}'s key {key_id!r}, but the signed content cannot be "
                "decoded, so the originator it names is unproven",
                party,
            )
        if party != originator:
            return Verification(
                SignatureStatus.INVALID,
                f"signed with {party}'s key {key_id!r} but the content claims originator "
                f"{originator}",
                party,
            )
        window = self._windows.get(key_id)
        if window is not None and signed_at is not None:
            outside = _outside(window, signed_at)
            if outside:
                return Verification(
                    SignatureStatus.INVALID,
                    f"key {key_id!r} {outside}; the record was created at {signed_at.isoformat()}",
                )
        return Verification(SignatureStatus.VALID, "", party)


def _outside(window: tuple[datetime | None, datetime | None], moment: datetime) -> str:
    """Why ``moment`` lies outside a key's validity ``window``, or an empty string."""
    not_before, not_after = window
    if not_before is not None and moment < not_before:
        return f"is valid only from {not_before.isoformat()}"
    if not_after is not None and moment >= not_after:
        return f"was valid until {not_after.isoformat()}"
    return ""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A freshly generated key pair in its file formats."""

    private_pem: bytes
    public_b64: str


def generate_key_pair() -> KeyPair:
    """A new Ed25519 key pair: PKCS#8 PEM private key, base64 raw public key."""
    private = Ed25519PrivateKey.generate()
    public: Ed25519PublicKey = private.public_key()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(pem, base64.b64encode(raw).decode())
