"""The exchange agreement: one YAML file from which everything else derives.

It lists the parties (agency code, name, country, public signing keys), the
feeds (which report types each carries), who may read which party's feeds, and
the defaults for handling and retention. Topic names, ACLs, the trust store
for signatures and what a liaison officer may subscribe to all come from it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from services.bus._errors import AgreementError, SigningError
from services.bus._reports import REPORT_MODELS
from services.bus._signing import TrustedKey, decode_public_key
from services.bus._vocabulary import (
    AgencyCode,
    Classification,
    CountryCode,
    HandlingCode,
    Priority,
    SectionCode,
    TlpMarking,
)

FeedName = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")]
RESERVED_FEED_NAMES = frozenset({"direct", "quarantine"})
FOLLOWS_ORIGINAL = frozenset({"Cancellation"})
"""Report types routed to wherever the message they refer to went."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublicKey(_Strict):
    """A party's public signing key."""

    id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$")]
    public_key: StrictStr
    """Raw Ed25519 public key, base64."""

    @field_validator("public_key")
    @classmethod
    def _is_ed25519(cls, value: str) -> str:
        try:
            decode_public_key(value, where="public_key")
        except SigningError as exc:
            raise ValueError(str(exc).removeprefix("public_key: ")) from exc
        return value

    # Key rotation: a party lists its old and new key during an overlap. A record
    # counts as signed by a key only when its signed created_at lies in the window.
    not_before: AwareDatetime | None = None
    """Records created before this instant are not accepted with this key."""
    not_after: AwareDatetime | None = None
    """Records created at or after this instant are not accepted with this key."""

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.not_before and self.not_after and self.not_after <= self.not_before:
            raise ValueError(f"key {self.id}: not_after must be later than not_before")
        return self

    def valid_at(self, moment: datetime) -> bool:
        """True when a record created at ``moment`` may be signed with this key."""
        return (self.not_before is None or self.not_before <= moment) and (
            self.not_after is None or moment < self.not_after
        )


class Party(_Strict):
    """A border service taking part in the exchange."""

    name: Annotated[StrictStr, Field(min_length=3)]
    country: CountryCode
    keys: list[PublicKey] = Field(min_length=1)
    border_sections: list[SectionCode] = Field(default_factory=list)


class Feed(_Strict):
    """A named stream of report types each party may publish."""

    description: StrictStr = ""
    report_types: list[StrictStr] = Field(min_length=1)
    partitions: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Partitions of each party's topic of this feed; unset means ``topics.partitions``."""

    @field_validator("report_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in FOLLOWS_ORIGINAL:
                raise ValueError(
                    f"{name} is in no feed: it goes wherever the message it refers to went",
                )
            if name not in REPORT_MODELS:
                known = ", ".join(sorted(set(REPORT_MODELS) - FOLLOWS_ORIGINAL))
                raise ValueError(f"unknown report type {name!r}; known types: {known}")
        return value


class Release(_Strict):
    """Who may read which feeds of one party."""

    from_: AgencyCode = Field(alias="from")
    feeds: list[FeedName] = Field(min_length=1)
    to: list[AgencyCode] = Field(min_length=1)


class Defaults(_Strict):
    """Header values the gateway fills when a report leaves them out."""

    classification: Classification = Classification.SENSITIVE
    tlp: TlpMarking = TlpMarking.AMBER
    handling: list[HandlingCode] = Field(default_factory=lambda: [HandlingCode.PURPOSE_ONLY])
    retention_days: Annotated[int, Field(ge=1, le=36_500)] = 730
    priority: Priority = Priority.ROUTINE


class TopicPolicy(_Strict):
    """How the agreement's topics are laid out on a Kafka cluster (``oix provision``)."""

    partitions: Annotated[int, Field(ge=1, le=1000)] = 3
    """Partitions of every topic whose feed does not say otherwise."""
    replay_window_days: Annotated[int, Field(ge=1, le=36_500)] = 30
    """How far back a party may replay from Kafka: the topics' ``retention.ms``."""


class ExchangeInfo(_Strict):
    """What the agreement is."""

    id: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")]
    title: StrictStr
    version: StrictStr


class Agreement(_Strict):
    """The whole exchange agreement."""

    exchange: ExchangeInfo
    defaults: Defaults = Field(default_factory=Defaults)
    parties: dict[AgencyCode, Party] = Field(min_length=2)
    feeds: dict[FeedName, Feed] = Field(min_length=1)
    releases: list[Release] = Field(default_factory=list)
    topics: TopicPolicy = Field(default_factory=TopicPolicy)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        self._check_feeds()
        self._check_key_ids()
        self._check_key_overlap()
        self._check_releases()
        self._check_replay_window()
        return self

    def _check_key_overlap(self) -> None:
        # Rotation overlaps two keys; a third valid at once is a forgotten key. The most
        # keys are valid at once at the start of some key's window (None: the beginning).
        for code, party in self.parties.items():
            for start in {key.not_before for key in party.keys}:
                valid = [
                    key.id
                    for key in party.keys
                    if (key.not_before is None if start is None else key.valid_at(start))
                ]
                if len(valid) > 2:  # noqa: PLR2004
                    raise ValueError(
                        f"parties.{code}.keys: {', '.join(valid)} are valid at the same time; "
                        "a rotation overlaps two keys at most (give the old ones a not_after)",
                    )

    def _check_replay_window(self) -> None:
        if self.topics.replay_window_days > self.defaults.retention_days:
            raise ValueError(
                f"topics.replay_window_days: {self.topics.replay_window_days} days is longer "
                f"than defaults.retention_days ({self.defaults.retention_days}): the broker "
                "must not keep records longer than the agreement allows",
            )

    def _check_feeds(self) -> None:
        owner: dict[str, str] = {}
        for name, feed in self.feeds.items():
            if name in RESERVED_FEED_NAMES:
                raise ValueError(f"feeds.{name}: the name {name!r} is reserved for topic naming")
            for report_type in feed.report_types:
                if report_type in owner:
                    raise ValueError(
                        f"feeds.{name}.report_types: {report_type} is already in feed "
                        f"{owner[report_type]!r}; a report type belongs to one feed",
                    )
                owner[report_type] = name

    def _check_key_ids(self) -> None:
        key_ids: dict[str, str] = {}
        for code, party in self.parties.items():
            for key in party.keys:
                if key.id in key_ids:
                    raise ValueError(
                        f"parties.{code}.keys: key id {key.id!r} is already used by "
                        f"{key_ids[key.id]}",
                    )
                key_ids[key.id] = code

    def _check_releases(self) -> None:
        for index, release in enumerate(self.releases):
            where = f"releases.{index}"
            if release.from_ not in self.parties:
                raise ValueError(f"{where}.from: unknown party {release.from_!r}")
            unknown_feeds = [f for f in release.feeds if f not in self.feeds]
            if unknown_feeds:
                raise ValueError(f"{where}.feeds: unknown feed {unknown_feeds[0]!r}")
            for reader in release.to:
                if reader not in self.parties:
                    raise ValueError(f"{where}.to: unknown party {reader!r}")
                if reader == release.from_:
                    raise ValueError(f"{where}.to: {reader} cannot release to itself")

    def feed_of(self, report_type: str) -> str:
        """The feed a report type is published on."""
        for name, feed in self.feeds.items():
            if report_type in feed.report_types:
                return name
        raise AgreementError(f"report type {report_type} is in no feed of the agreement")

    def readers(self, originator: str, feed: str) -> frozenset[str]:
        """Parties that may read ``originator``'s ``feed``."""
        return frozenset(
            reader
            for release in self.releases
            if release.from_ == originator and feed in release.feeds
            for reader in release.to
        )

    def partners_of(self, party: str) -> frozenset[str]:
        """Parties whose feeds ``party`` may read at least in part."""
        return frozenset(r.from_ for r in self.releases if party in r.to)

    def partitions_of(self, feed: str) -> int:
        """Partitions of each party's topic of ``feed``."""
        return self.feeds[feed].partitions or self.topics.partitions

    def trusted_keys(self) -> list[TrustedKey]:
        """The trust store for signature verification, with each key's validity."""
        return [
            TrustedKey(
                code,
                key.id,
                decode_public_key(key.public_key, where=f"{code}/{key.id}"),
                key.not_before,
                key.not_after,
            )
            for code, party in self.parties.items()
            for key in party.keys
        ]


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in {"function-after", "function-before"})


def parse_agreement(text: str, source: str) -> Agreement:
    """Parse agreement YAML; errors name ``source``, the path inside it and the reason."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise AgreementError(f"{source}: {where}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise AgreementError(f"{source}: the agreement must be a YAML mapping at the top level")
    try:
        return Agreement.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            path = _location(error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            # Checks across fields put the path in the message itself.
            lines.append(f"{source}: {path}: {message}" if path else f"{source}: {message}")
        raise AgreementError("\n".join(lines)) from exc


def load_agreement(path: Path) -> Agreement:
    """Load and validate the agreement file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgreementError(f"{path}: cannot read the agreement: {exc.strerror}") from exc
    return parse_agreement(text, str(path))
