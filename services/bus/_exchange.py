"""Everything a service derives from settings: agreement, codec, routing, trust store, keys.

Built once at start, so a bad agreement, schema or key stops the service with
one clear error before it touches Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from services.bus._agreement import Agreement, load_agreement
from services.bus._codec import Codec, SchemaRegistry
from services.bus._envelope import Opener, Sealer
from services.bus._errors import SigningError
from services.bus._logging import get_logger
from services.bus._rotation import demo_public_keys, refuse_demo_keys
from services.bus._settings import Settings
from services.bus._signing import Signer, Verifier, decode_public_key, key_file_exposure
from services.bus._topics import Router, TopicNaming

log = get_logger(__name__)


_WARNED: set[Path] = set()
"""Demo key files warned about already (once per process is loud enough)."""


def _check_exposure(path: Path, signer: Signer) -> None:
    """Refuse a private key file others can read; only warn for a published demo key.

    The demo keys of ``deploy/keys`` are public anyway, and git checks them out
    with the mode the checkout gives (usually 0644): they are accepted with a
    warning outside production (``OIX_ENV=production`` refuses an agreement
    that lists them at all). Any other key file must be its owner's only.

    Raises:
        SigningError: naming the file, its mode and the command that fixes it.
    """
    exposure = key_file_exposure(path)
    if exposure is None:
        return
    if signer.public_key not in demo_public_keys():
        raise SigningError(
            f"{path}: refusing a private key file others can use ({exposure}); "
            f"make it its owner's only: chmod 600 {path}",
        )
    if path not in _WARNED:
        _WARNED.add(path)
        log.warning(
            "signing with a DEMO key whose private half is published: anything it signs "
            "proves nothing, and OIX_ENV=production refuses it; its file is also readable "
            "by others, which any other key file would not be allowed",
            path=str(path),
            exposure=exposure,
        )


def key_file(keys_dir: Path, key_id: str) -> Path:
    """Where the private key with ``key_id`` is kept."""
    return keys_dir / f"{key_id}.pem"


@dataclass(frozen=True)
class Exchange:
    """The agreement and the schema contract, ready to use."""

    agreement: Agreement
    codec: Codec
    naming: TopicNaming
    keys_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Exchange:
        """Load the agreement, schemas and naming that ``settings`` point at.

        Raises:
            ConfigError: with ``OIX_ENV=production``, an agreement that trusts a demo key.
        """
        agreement = load_agreement(settings.agreement)
        if settings.env == "production":
            refuse_demo_keys(agreement, str(settings.agreement))
        return cls(
            agreement=agreement,
            codec=Codec(SchemaRegistry.from_dir(settings.schemas_dir)),
            naming=TopicNaming(settings.topic_prefix),
            keys_dir=settings.keys_dir,
        )

    @cached_property
    def router(self) -> Router:
        """Routing of reports to topics."""
        return Router(self.agreement, self.naming)

    @cached_property
    def verifier(self) -> Verifier:
        """Signature verification against the agreement's keys."""
        return Verifier(self.agreement.trusted_keys())

    @cached_property
    def opener(self) -> Opener:
        """Decoding and verification of records."""
        return Opener(self.codec, self.verifier)

    def signer(self, party: str, now: datetime | None = None) -> Signer:
        """``party``'s signer: of its keys valid now with a private key file, the one valid longest.

        During a rotation's overlap that is the new key (no ``not_after``), so a
        gateway restarted with the new agreement signs with it at once.

        Raises:
            SigningError: no usable key file, or a key file that does not match the agreement.
        """
        if party not in self.agreement.parties:
            raise SigningError(f"{party} is not a party to the agreement")
        moment = now or datetime.now(UTC)
        keys = self.agreement.parties[party].keys
        with_file = [key for key in keys if key_file(self.keys_dir, key.id).is_file()]
        usable = sorted(
            (key for key in with_file if key.valid_at(moment)),
            key=lambda key: key.not_after or datetime.max.replace(tzinfo=UTC),
            reverse=True,
        )
        if not usable:
            tried = ", ".join(str(key_file(self.keys_dir, key.id)) for key in keys)
            if with_file:
                raise SigningError(
                    f"no key of {party} is valid now ({', '.join(k.id for k in with_file)} "
                    "outside not_before/not_after); rotate with `oix keys rotate`",
                )
            raise SigningError(f"no private key for {party}; looked for {tried}")
        key = usable[0]
        path = key_file(self.keys_dir, key.id)
        signer = Signer.from_pem_file(party, key.id, path)
        if signer.public_key != decode_public_key(key.public_key, where=f"{party}/{key.id}"):
            raise SigningError(
                f"{path}: this private key does not match the public key the agreement "
                f"lists for {key.id}",
            )
        _check_exposure(path, signer)
        return signer

    def sealer(self, party: str) -> Sealer:
        """Encoding and signing for ``party``."""
        return Sealer(self.codec, self.signer(party))
