"""The header every report carries, and the shared records reports are made of."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from services.bus._vocabulary import (
    AgencyCode,
    Classification,
    ConfidenceLevel,
    HandlingCode,
    ImpactLevel,
    LanguageCode,
    LinkRelation,
    LongText,
    Mode,
    Priority,
    SectionCode,
    ShortText,
    TlpMarking,
)


def _to_millis(value: datetime) -> datetime:
    # Avro timestamp-millis keeps milliseconds: truncating here makes a model
    # equal to what a reader decodes from the bus. The checks skip the costly
    # conversions in the common case (UTC, whole milliseconds).
    if value.utcoffset():
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            # pydantic turns a ValueError into a field error; an OverflowError would be a 500.
            raise ValueError("the instant in UTC is before year 1 or after 9999") from None
    extra = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - extra) if extra else value


Timestamp = Annotated[AwareDatetime, AfterValidator(_to_millis)]
"""A timezone-aware instant, kept to the millisecond as on the wire."""


def now() -> datetime:
    """The current instant, to the millisecond."""
    return _to_millis(datetime.now(UTC))


class OixModel(BaseModel):
    """Base of every OIX model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


class MessageLink(OixModel):
    """A link from this message to an earlier message."""

    message_id: uuid.UUID
    relation: LinkRelation


class GeoPoint(OixModel):
    """A WGS84 position in decimal degrees."""

    lat: Annotated[StrictFloat | StrictInt, Field(ge=-90, le=90)]
    lon: Annotated[StrictFloat | StrictInt, Field(ge=-180, le=180)]


class Location(OixModel):
    """Where something happened or is needed, as precisely as known."""

    border_section: SectionCode
    point: GeoPoint | None = None
    border_sign: ShortText | None = None
    checkpoint: ShortText | None = None
    description: LongText | None = None


class MessageHeader(OixModel):
    """The header of every report; it is signed with the rest of the value."""

    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_id: uuid.UUID = Field(
        default_factory=lambda data: data["message_id"],
        description="Defaults to message_id: the first report on an event names it.",
    )
    event_version: Annotated[StrictInt, Field(ge=1)] = 1
    originator: AgencyCode
    owner: AgencyCode | None = None
    originating_unit: ShortText | None = None
    created_at: Timestamp = Field(default_factory=now)
    classification: Classification
    handling: list[HandlingCode] = Field(default_factory=list, max_length=4)
    handling_note: LongText | None = None
    tlp: TlpMarking
    releasable_to: list[AgencyCode] = Field(max_length=64)
    purpose: LongText | None = None
    links: list[MessageLink] = Field(default_factory=list, max_length=100)
    impact: ImpactLevel | None = None
    confidence: ConfidenceLevel | None = None
    personal_data: StrictBool = False
    retention_days: Annotated[StrictInt, Field(ge=1, le=36_500)] | None = None
    priority: Priority = Priority.ROUTINE
    mode: Mode = Mode.ACTUAL
    language: LanguageCode = "en"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Runs for every report published: the cheap length checks come first.
        releasable = self.releasable_to
        if len(releasable) > 1 and len(set(releasable)) != len(releasable):
            raise ValueError("releasable_to lists an agency twice")
        handling = self.handling
        if handling:
            if len(handling) > 1 and len(set(handling)) != len(handling):
                raise ValueError("handling lists a code twice")
            if HandlingCode.OTHER in handling and not self.handling_note:
                raise ValueError("handling OTHER needs a handling_note saying what it means")
        if self.links and any(link.message_id == self.message_id for link in self.links):
            raise ValueError("a message cannot link to itself")
        return self

    def links_with(self, relation: LinkRelation) -> list[uuid.UUID]:
        """Ids of the messages this one links to with ``relation``."""
        return [link.message_id for link in self.links if link.relation is relation]
