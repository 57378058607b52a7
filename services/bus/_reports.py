"""The report types of the exchange, one pydantic model per top-level ``.avsc`` record.

Every model carries a ``type`` discriminator equal to its Avro record name; the
Avro value does not hold it, the writer schema's fingerprint says it instead.
"""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from services.bus._header import Location, MessageHeader, OixModel, Timestamp
from services.bus._vocabulary import (
    AckStatus,
    ActionTaken,
    AgencyCode,
    CancellationReason,
    Count,
    CountryCode,
    DetectionMeans,
    ForceUsed,
    IncidentCategory,
    IncidentStatus,
    LinkRelation,
    LongText,
    MeansOfCrossing,
    Nationality,
    PersonCategory,
    PositiveCount,
    ResponseDecision,
    RiskCategory,
    SectionCode,
    SeriousIncidentCategory,
    ShortText,
    Speciality,
    Urgency,
)


class Report(OixModel):
    """Base of every report type."""

    report_type: ClassVar[str]
    header: MessageHeader

    @property
    def subject(self) -> str:
        """What ordering matters for: the Kafka key. Corrections share their event's key."""
        return str(self.header.event_id)


class NationalityCount(OixModel):
    """Persons of one nationality."""

    nationality: Nationality
    count: PositiveCount


class PersonCount(OixModel):
    """Persons involved; men and women are adults, minors counted apart."""

    total: Count
    men: Count | None = None
    women: Count | None = None
    minors: Count | None = None
    nationalities: list[NationalityCount] = Field(default_factory=list, max_length=250)

    @model_validator(mode="after")
    def _breakdown_fits_total(self) -> Self:
        known = sum(n for n in (self.men, self.women, self.minors) if n is not None)
        if known > self.total:
            raise ValueError(f"men + women + minors = {known} exceeds total {self.total}")
        by_nationality = sum(n.count for n in self.nationalities)
        if by_nationality > self.total:
            raise ValueError(
                f"nationality counts add up to {by_nationality}, more than total {self.total}",
            )
        if len({n.nationality for n in self.nationalities}) != len(self.nationalities):
            raise ValueError("a nationality is listed twice")
        return self


class IncidentReport(Report):
    """An incident at the border; impact and confidence go in the header and are required."""

    report_type: ClassVar[str] = "IncidentReport"
    type: Literal["IncidentReport"] = "IncidentReport"
    category: IncidentCategory
    detected_at: Timestamp
    detected_by: DetectionMeans | None = None
    occurred_at: Timestamp | None = None
    location: Location
    persons: PersonCount
    means: list[MeansOfCrossing] = Field(default_factory=list, max_length=10)
    means_note: LongText | None = None
    actions_taken: list[ActionTaken] = Field(default_factory=list, max_length=9)
    narrative: LongText = ""

    @model_validator(mode="after")
    def _assessed(self) -> Self:
        if self.header.impact is None:
            raise ValueError("header.impact: an incident report must state its impact level")
        if self.header.confidence is None:
            raise ValueError("header.confidence: an incident report must state its confidence")
        if self.occurred_at is not None and self.occurred_at > self.detected_at:
            raise ValueError("occurred_at is after detected_at")
        return self


class SectionSummary(OixModel):
    """Figures for one border section over the report period."""

    border_section: SectionCode
    neighbour_country: CountryCode | None = None
    attempts_prevented: Count = 0
    apprehensions: Count = 0
    asylum_requests: Count = 0
    turned_away: Count = 0
    notes: LongText | None = None


class SituationReport(Report):
    """Figures per border section for a period, typically one day."""

    report_type: ClassVar[str] = "SituationReport"
    type: Literal["SituationReport"] = "SituationReport"
    period_start: Timestamp
    period_end: Timestamp
    sections: list[SectionSummary] = Field(min_length=1, max_length=200)
    summary: LongText | None = None

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.period_end <= self.period_start:
            raise ValueError("period_end must be after period_start")
        if len({s.border_section for s in self.sections}) != len(self.sections):
            raise ValueError("a border section is listed twice")
        return self


class SpecialityCount(OixModel):
    """Officers of one speciality; count null leaves the number to the sender."""

    speciality: Speciality
    count: PositiveCount | None = None


class EquipmentItem(OixModel):
    """Equipment asked for."""

    description: ShortText
    quantity: PositiveCount = 1


class AssistanceRequest(Report):
    """A request to partners for officers, specialists or equipment."""

    report_type: ClassVar[str] = "AssistanceRequest"
    type: Literal["AssistanceRequest"] = "AssistanceRequest"
    requested_from: list[AgencyCode] = Field(min_length=1, max_length=64)
    officers_min: Count = 0
    officers_max: Count | None = None
    specialities: list[SpecialityCount] = Field(default_factory=list, max_length=8)
    equipment: list[EquipmentItem] = Field(default_factory=list, max_length=50)
    location: Location
    needed_from: Timestamp
    needed_until: Timestamp | None = None
    urgency: Urgency
    justification: LongText = ""

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        if self.officers_max is not None and self.officers_max < self.officers_min:
            raise ValueError("officers_max is below officers_min")
        if self.needed_until is not None and self.needed_until <= self.needed_from:
            raise ValueError("needed_until must be after needed_from")
        if not (self.officers_min or self.officers_max or self.specialities or self.equipment):
            raise ValueError(
                "the request asks for nothing: give officers, specialities or equipment"
            )
        return self


class AssistanceResponse(Report):
    """The answer to a request for assistance; its header links RESPONDS_TO the request."""

    report_type: ClassVar[str] = "AssistanceResponse"
    type: Literal["AssistanceResponse"] = "AssistanceResponse"
    decision: ResponseDecision
    officers_offered: Count = 0
    specialities: list[SpecialityCount] = Field(default_factory=list, max_length=8)
    equipment: list[EquipmentItem] = Field(default_factory=list, max_length=50)
    available_from: Timestamp | None = None
    available_until: Timestamp | None = None
    conditions: LongText | None = None
    note: LongText | None = None

    @model_validator(mode="after")
    def _answers_and_offers(self) -> Self:
        if not self.header.links_with(LinkRelation.RESPONDS_TO):
            raise ValueError(
                "header.links: an assistance response links to the request it answers "
                "(relation RESPONDS_TO)",
            )
        offers = bool(self.officers_offered or self.specialities or self.equipment)
        if self.decision is ResponseDecision.DECLINE:
            if offers:
                raise ValueError(
                    "decision: DECLINE offers nothing; use PARTIAL for a smaller offer"
                )
        elif not offers:
            raise ValueError(
                f"decision: {self.decision} offers nothing: give officers or equipment"
            )
        elif self.available_from is None:
            raise ValueError(f"available_from: required with decision {self.decision}")
        counted = sum(s.count or 0 for s in self.specialities)
        if counted > self.officers_offered:
            raise ValueError(
                f"specialities: {counted} officers by speciality, more than officers_offered "
                f"({self.officers_offered})",
            )
        if (
            self.available_from is not None
            and self.available_until is not None
            and self.available_until <= self.available_from
        ):
            raise ValueError("available_until must be after available_from")
        return self


class DeploymentNotice(Report):
    """Officers sent to a partner, possibly relieving an earlier group."""

    report_type: ClassVar[str] = "DeploymentNotice"
    type: Literal["DeploymentNotice"] = "DeploymentNotice"
    host_agency: AgencyCode
    officers: PositiveCount
    specialities: list[SpecialityCount] = Field(default_factory=list, max_length=8)
    deployed_to: Location
    period_start: Timestamp
    period_end: Timestamp | None = None
    replaces_deployment_id: uuid.UUID | None = None
    officers_relieved: PositiveCount | None = None
    coordinating_authority: ShortText
    notes: LongText | None = None

    @model_validator(mode="after")
    def _rotation(self) -> Self:
        if self.period_end is not None and self.period_end <= self.period_start:
            raise ValueError("period_end must be after period_start")
        if self.officers_relieved is not None and self.replaces_deployment_id is None:
            raise ValueError("officers_relieved needs replaces_deployment_id")
        if self.host_agency == self.header.originator:
            raise ValueError("host_agency is the originator itself")
        return self


class EarlyWarning(Report):
    """A risk expected at the border; confidence (required) and impact are in the header."""

    report_type: ClassVar[str] = "EarlyWarning"
    type: Literal["EarlyWarning"] = "EarlyWarning"
    risk_category: RiskCategory
    risk: Annotated[LongText, Field(min_length=1)]
    expected_from: Timestamp
    expected_until: Timestamp | None = None
    affected_sections: list[SectionCode] = Field(default_factory=list, max_length=200)
    indicators: list[ShortText] = Field(default_factory=list, max_length=50)
    recommended_actions: LongText | None = None

    @model_validator(mode="after")
    def _assessed(self) -> Self:
        if self.header.confidence is None:
            raise ValueError("header.confidence: an early warning must state its confidence")
        if self.expected_until is not None and self.expected_until <= self.expected_from:
            raise ValueError("expected_until must be after expected_from")
        return self


class PersonsInCategory(OixModel):
    """Persons of one category involved in a serious incident."""

    category: PersonCategory
    count: PositiveCount


class Harm(OixModel):
    """Injuries, deaths and missing persons, officers counted apart."""

    persons_injured: Count = 0
    persons_dead: Count = 0
    persons_missing: Count = 0
    officers_injured: Count = 0
    officers_dead: Count = 0


class SeriousIncidentReport(Report):
    """A serious incident; impact and confidence go in the header and are required."""

    report_type: ClassVar[str] = "SeriousIncidentReport"
    type: Literal["SeriousIncidentReport"] = "SeriousIncidentReport"
    category: SeriousIncidentCategory
    occurred_at: Timestamp
    location: Location
    persons: list[PersonsInCategory] = Field(default_factory=list, max_length=7)
    harm: Harm
    use_of_force: list[ForceUsed] = Field(default_factory=list, max_length=8)
    status: IncidentStatus
    handler: ShortText
    summary: LongText = ""
    follow_up: LongText | None = None

    @model_validator(mode="after")
    def _assessed(self) -> Self:
        if self.header.impact is None:
            raise ValueError("header.impact: a serious incident report must state its impact level")
        if self.header.confidence is None:
            raise ValueError(
                "header.confidence: a serious incident report must state its confidence"
            )
        if len({p.category for p in self.persons}) != len(self.persons):
            raise ValueError("persons: a category is listed twice")
        if len(set(self.use_of_force)) != len(self.use_of_force):
            raise ValueError("use_of_force: a means of force is listed twice")
        if self.category is SeriousIncidentCategory.USE_OF_FORCE and not self.use_of_force:
            raise ValueError("use_of_force: category USE_OF_FORCE names the force used")
        if self.category is SeriousIncidentCategory.DEATH and not (
            self.harm.persons_dead or self.harm.officers_dead
        ):
            raise ValueError("harm: category DEATH counts the dead")
        return self


class RequestForInformation(Report):
    """A question to one party; answered by any report linking RESPONDS_TO."""

    report_type: ClassVar[str] = "RequestForInformation"
    type: Literal["RequestForInformation"] = "RequestForInformation"
    addressed_to: AgencyCode
    about_message_id: uuid.UUID | None = None
    question: Annotated[LongText, Field(min_length=1)]
    due_at: Timestamp

    @model_validator(mode="after")
    def _due_after_creation(self) -> Self:
        if self.due_at <= self.header.created_at:
            raise ValueError("due_at must be after header.created_at")
        return self


class Acknowledgement(Report):
    """Receipt of a message by a party (the acknowledgement's originator)."""

    report_type: ClassVar[str] = "Acknowledgement"
    type: Literal["Acknowledgement"] = "Acknowledgement"
    acknowledged_message_id: uuid.UUID
    status: AckStatus
    note: LongText | None = None

    @property
    def subject(self) -> str:
        """Acknowledgements are ordered with the message they acknowledge."""
        return str(self.acknowledged_message_id)


class Cancellation(Report):
    """Withdraws an earlier message. Corrections are reports that supersede instead."""

    report_type: ClassVar[str] = "Cancellation"
    type: Literal["Cancellation"] = "Cancellation"
    cancelled_message_id: uuid.UUID
    reason: CancellationReason
    reason_text: LongText = ""


REPORT_MODELS: dict[str, type[Report]] = {
    model.report_type: model
    for model in (
        IncidentReport,
        SeriousIncidentReport,
        SituationReport,
        AssistanceRequest,
        AssistanceResponse,
        DeploymentNotice,
        EarlyWarning,
        RequestForInformation,
        Acknowledgement,
        Cancellation,
    )
}
"""Every report model by its type name."""

AnyReport = Annotated[
    IncidentReport
    | SeriousIncidentReport
    | SituationReport
    | AssistanceRequest
    | AssistanceResponse
    | DeploymentNotice
    | EarlyWarning
    | RequestForInformation
    | Acknowledgement
    | Cancellation,
    Field(discriminator="type"),
]
"""Any report, told apart by its ``type`` field."""

ANY_REPORT: TypeAdapter[AnyReport] = TypeAdapter(AnyReport)
