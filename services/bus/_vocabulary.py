"""The controlled vocabulary of the exchange: enums and constrained value types.

Each enum mirrors the ``.avsc`` enum of the same name; a test keeps them equal.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Annotated

import pycountry
from pydantic import AfterValidator, Field, StrictInt, StrictStr


class ImpactLevel(StrEnum):
    """EUROSUR impact level assessed by the originator."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    VERY_HIGH = "VERY_HIGH"


class ConfidenceLevel(StrEnum):
    """How sure the originator is of the reported facts."""

    CONFIRMED = "CONFIRMED"
    PROBABLE = "PROBABLE"
    POSSIBLE = "POSSIBLE"
    DOUBTFUL = "DOUBTFUL"
    UNKNOWN = "UNKNOWN"


class Classification(StrEnum):
    """Security classification of the content."""

    UNCLASSIFIED = "UNCLASSIFIED"
    SENSITIVE = "SENSITIVE"
    RESTRICTED = "RESTRICTED"
    CONFIDENTIAL = "CONFIDENTIAL"


class HandlingCode(StrEnum):
    """SIENA-style handling restriction."""

    PURPOSE_ONLY = "PURPOSE_ONLY"
    NO_COURT = "NO_COURT"
    NO_ONWARD = "NO_ONWARD"
    OTHER = "OTHER"


class TlpMarking(StrEnum):
    """Traffic Light Protocol 2.0 marking."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER_STRICT"
    RED = "RED"


class Priority(StrEnum):
    """Handling priority for the recipient."""

    ROUTINE = "ROUTINE"
    PRIORITY = "PRIORITY"
    IMMEDIATE = "IMMEDIATE"
    FLASH = "FLASH"


class Mode(StrEnum):
    """Whether a message describes a real event, an exercise or a test."""

    ACTUAL = "ACTUAL"
    EXERCISE = "EXERCISE"
    TEST = "TEST"


class LinkRelation(StrEnum):
    """How a message relates to an earlier one."""

    UPDATES = "UPDATES"
    SUPERSEDES = "SUPERSEDES"
    RESPONDS_TO = "RESPONDS_TO"
    RELATES_TO = "RELATES_TO"


class IncidentCategory(StrEnum):
    """What kind of incident happened."""

    ILLEGAL_CROSSING_ATTEMPT = "ILLEGAL_CROSSING_ATTEMPT"
    APPREHENSION = "APPREHENSION"
    SMUGGLING = "SMUGGLING"
    DOCUMENT_FRAUD = "DOCUMENT_FRAUD"
    ASYLUM_REQUEST_AT_BORDER = "ASYLUM_REQUEST_AT_BORDER"
    VIOLENCE_AGAINST_OFFICERS = "VIOLENCE_AGAINST_OFFICERS"
    DEATH_OR_INJURY = "DEATH_OR_INJURY"
    OTHER = "OTHER"


class MeansOfCrossing(StrEnum):
    """How persons tried to cross."""

    ON_FOOT = "ON_FOOT"
    LADDER = "LADDER"
    CUTTING_TOOL = "CUTTING_TOOL"
    WETSUIT = "WETSUIT"
    SWIMMING = "SWIMMING"
    BOAT = "BOAT"
    VEHICLE = "VEHICLE"
    DRONE = "DRONE"
    FORGED_DOCUMENT = "FORGED_DOCUMENT"
    OTHER = "OTHER"


class ActionTaken(StrEnum):
    """What the border service did."""

    CROSSING_PREVENTED = "CROSSING_PREVENTED"
    APPREHENDED = "APPREHENDED"
    TURNED_AWAY = "TURNED_AWAY"
    ASYLUM_PROCEDURE_STARTED = "ASYLUM_PROCEDURE_STARTED"
    MEDICAL_ASSISTANCE = "MEDICAL_ASSISTANCE"
    HANDED_TO_POLICE = "HANDED_TO_POLICE"
    SEARCH_ONGOING = "SEARCH_ONGOING"
    BARRIER_REPAIRED = "BARRIER_REPAIRED"
    OTHER = "OTHER"


class Speciality(StrEnum):
    """Officer specialities asked for or deployed."""

    BORDER_GUARD = "BORDER_GUARD"
    CYNOLOGIST = "CYNOLOGIST"
    CRIMINAL_INTELLIGENCE = "CRIMINAL_INTELLIGENCE"
    DOCUMENT_EXPERT = "DOCUMENT_EXPERT"
    INTERPRETER = "INTERPRETER"
    MEDIC = "MEDIC"
    DRONE_OPERATOR = "DRONE_OPERATOR"
    OTHER = "OTHER"


class Urgency(StrEnum):
    """How soon assistance is needed."""

    ROUTINE = "ROUTINE"
    URGENT = "URGENT"
    IMMEDIATE = "IMMEDIATE"


class RiskCategory(StrEnum):
    """The kind of risk an early warning is about."""

    MIGRATION_PRESSURE = "MIGRATION_PRESSURE"
    INSTRUMENTALISED_MIGRATION = "INSTRUMENTALISED_MIGRATION"
    ROUTE_DISPLACEMENT = "ROUTE_DISPLACEMENT"
    SMUGGLING = "SMUGGLING"
    HYBRID_THREAT = "HYBRID_THREAT"
    OTHER = "OTHER"


class AckStatus(StrEnum):
    """How far a recipient got with a message."""

    RECEIVED = "RECEIVED"
    READ = "READ"
    ACTIONED = "ACTIONED"


class CancellationReason(StrEnum):
    """Why a message is withdrawn."""

    ENTERED_IN_ERROR = "ENTERED_IN_ERROR"
    DUPLICATE = "DUPLICATE"
    WITHDRAWN = "WITHDRAWN"
    EXERCISE_ENDED = "EXERCISE_ENDED"
    OTHER = "OTHER"


class DetectionMeans(StrEnum):
    """How an incident was detected."""

    PATROL = "PATROL"
    THERMAL_CAMERA = "THERMAL_CAMERA"
    CAMERA = "CAMERA"
    SENSOR = "SENSOR"
    DRONE = "DRONE"
    AIRCRAFT = "AIRCRAFT"
    VESSEL = "VESSEL"
    PUBLIC_REPORT = "PUBLIC_REPORT"
    PARTNER_AGENCY = "PARTNER_AGENCY"
    OTHER = "OTHER"


class ResponseDecision(StrEnum):
    """What an answer to a request for assistance decides."""

    ACCEPT = "ACCEPT"
    PARTIAL = "PARTIAL"
    DECLINE = "DECLINE"


class SeriousIncidentCategory(StrEnum):
    """The kind of serious incident (Frontex serious incident reporting)."""

    DEATH = "DEATH"
    SERIOUS_INJURY = "SERIOUS_INJURY"
    USE_OF_FORCE = "USE_OF_FORCE"
    ALLEGED_RIGHTS_VIOLATION = "ALLEGED_RIGHTS_VIOLATION"
    SEARCH_AND_RESCUE = "SEARCH_AND_RESCUE"
    VIOLENCE_AGAINST_OFFICERS = "VIOLENCE_AGAINST_OFFICERS"
    HYBRID_ATTACK = "HYBRID_ATTACK"
    OTHER = "OTHER"


class ForceUsed(StrEnum):
    """A means of force officers used."""

    PHYSICAL = "PHYSICAL"
    RESTRAINT = "RESTRAINT"
    BATON = "BATON"
    IRRITANT_SPRAY = "IRRITANT_SPRAY"
    SERVICE_DOG = "SERVICE_DOG"
    WARNING_SHOT = "WARNING_SHOT"
    FIREARM = "FIREARM"
    OTHER = "OTHER"


class PersonCategory(StrEnum):
    """The role of persons involved in a serious incident."""

    MIGRANT = "MIGRANT"
    ASYLUM_SEEKER = "ASYLUM_SEEKER"
    UNACCOMPANIED_MINOR = "UNACCOMPANIED_MINOR"
    SUSPECTED_SMUGGLER = "SUSPECTED_SMUGGLER"
    OFFICER = "OFFICER"
    BYSTANDER = "BYSTANDER"
    OTHER = "OTHER"


class IncidentStatus(StrEnum):
    """Whether the handling of an incident goes on."""

    ONGOING = "ONGOING"
    CLOSED = "CLOSED"


AGENCY_CODE_PATTERN = r"^[A-Z]{2}-[A-Z0-9]{2,12}$"
UNKNOWN_NATIONALITY = "XX"


# Loaded at the first check, not at import: pycountry reads its databases then (about
# 50 ms of CPU), which every process importing the bus paid, validating or not.
@functools.cache
def _countries() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


@functools.cache
def _languages() -> frozenset[str]:
    return frozenset(lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2"))


def _country(code: str) -> str:
    if code not in _countries():
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def _nationality(code: str) -> str:
    return code if code == UNKNOWN_NATIONALITY else _country(code)


def _language(code: str) -> str:
    if code not in _languages():
        raise ValueError(f"{code!r} is not an ISO 639-1 language code")
    return code


AgencyCode = Annotated[
    StrictStr,
    Field(pattern=AGENCY_CODE_PATTERN, examples=["LT-VSAT"]),
]
"""A party's code: ISO country code, a dash, the agency's short name."""
CountryCode = Annotated[StrictStr, AfterValidator(_country), Field(examples=["LT"])]
Nationality = Annotated[StrictStr, AfterValidator(_nationality), Field(examples=["IQ"])]
LanguageCode = Annotated[StrictStr, AfterValidator(_language), Field(examples=["en"])]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
PositiveCount = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
ShortText = Annotated[StrictStr, Field(min_length=1, max_length=200)]
LongText = Annotated[StrictStr, Field(max_length=20_000)]
SectionCode = Annotated[
    StrictStr,
    Field(pattern=r"^[A-Z0-9][A-Z0-9-]{1,63}$", examples=["LV-BY-LATGALE"]),
]
