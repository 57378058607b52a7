"""The gateway's OpenAPI description: report schemas, answers, and a working example per type.

The request bodies are read by the gateway itself (size limit first, then
JSON, then validation with every failing field), so their schemas are added
here from the report models rather than inferred by FastAPI. The examples are
the ones in ``deploy/examples``, rewritten for the agency this gateway serves
and moved to the present, so "Try it out" in ``/docs`` publishes them.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from services.bus import (
    ANY_REPORT,
    Cancellation,
    Exchange,
    OixError,
    Report,
    freshen,
    load_examples,
)
from services.gateway._intake import DEFAULTED_BY_AGREEMENT, FILLED_BY_GATEWAY

JSON = "application/json"
PROBLEM_MEDIA_TYPE = "application/problem+json"
NDJSON_MEDIA_TYPES = ("application/x-ndjson", "application/jsonl")


class Issue(BaseModel):
    """One failing field and why."""

    path: str = Field(examples=["header.releasable_to[0]"])
    reason: str = Field(examples=["String should match pattern '^[A-Z]{2}-[A-Z0-9]{2,12}$'"])


class Problem(BaseModel):
    """Why a request was not accepted (RFC 9457 problem details)."""

    title: str
    status: int
    detail: str
    code: str = Field(
        description="Machine-readable reason: malformed, unauthorized, forbidden, not_found, "
        "conflict, too_large, unsupported_media_type, invalid, broker_unavailable, "
        "shutting_down, timeout, internal, message_id_taken.",
    )
    issues: list[Issue] = Field(description="Every failing field, when fields are at fault.")
    message_id: str | None = Field(
        description="The report's message id when known: retry with it to stay idempotent.",
    )


class DeliveryBody(BaseModel):
    """One record on the bus."""

    topic: str
    partition: int
    offset: int


class AcceptedBody(BaseModel):
    """A report the broker acknowledged (acks=all): where it is."""

    message_id: str
    report_type: str
    topic: str = Field(description="The first (for a feed report, the only) topic.")
    partition: int
    offset: int
    deliveries: list[DeliveryBody] = Field(
        description="Every record written: one per bilateral channel when the report is "
        "released to fewer parties than its feed.",
    )
    key: str = Field(description="The Kafka key: corrections and cancellations share it.")
    accepted_at: str
    trace_id: str | None
    replayed: bool = Field(description="True when this answers a retry with the first result.")


class BatchItem(BaseModel):
    """The outcome of one report of a batch."""

    index: int = Field(description="Position of the report in the batch (0-based).")
    status: int = Field(description="201 accepted, or the status a single request would get.")
    accepted: AcceptedBody | None = None
    problem: Problem | None = None


class BatchBody(BaseModel):
    """Per report of a batch: accepted with coordinates, or refused with reasons."""

    accepted: int
    rejected: int
    results: list[BatchItem]


class PartnerAcknowledgementBody(BaseModel):
    """A partner's Acknowledgement of the message; only parties it was released to count."""

    party: str
    status: str = Field(description="RECEIVED, READ or ACTIONED.")
    ack_message_id: str
    claimed_at: str = Field(
        description="When the partner says it acknowledged (its header.created_at): a claim, "
        "signed but not checked against any clock.",
    )
    observed_at: str | None = Field(
        description="When this gateway read the acknowledgement from the bus (null for one "
        "recorded by an older gateway).",
    )
    note: str | None
    topic: str
    partition: int
    offset: int


class StatusBody(AcceptedBody):
    """Where a message went and which partners acknowledged it."""

    event_id: str
    releasable_to: list[str]
    acknowledgements: list[PartnerAcknowledgementBody]
    awaiting: list[str] = Field(description="Parties released to that have not acknowledged.")


class HealthBody(BaseModel):
    """The process answers."""

    status: str
    agency: str


class ReadyBody(BaseModel):
    """Whether the gateway can accept reports now."""

    status: str
    agency: str
    problems: list[str]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem answers with these statuses."""
    meaning = {
        400: "Malformed JSON, not an object, missing or unknown `type`.",
        401: "Missing or unknown bearer token.",
        403: "The token's agency is not this gateway's, or the report claims another originator.",
        404: "No such message was published through this gateway.",
        408: "The body did not arrive in time; the connection is closed.",
        409: "The message id or Idempotency-Key was already used for a different request, "
        "or another party was seen using the message id.",
        413: "The body (or the batch) is over the limit.",
        415: "The body is neither JSON nor NDJSON.",
        422: "The report is invalid, breaks the agreement, or corrects/cancels an unknown "
        "or foreign message: every failing field with its reason.",
        503: "The broker did not acknowledge in time, or the gateway is stopping; see "
        "Retry-After. The report may still be written: retry with the same message id.",
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": meaning[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status == 503:  # noqa: PLR2004
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                },
            }
        if status == 401:  # noqa: PLR2004
            entry["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}},
            }
        responses[status] = entry
    return responses


def report_schemas() -> dict[str, Any]:
    """Component schemas of every report type, as the gateway takes them.

    The header fields the gateway fills (originator, message id, created-at,
    and the agreement's defaults) are optional here, unlike on the wire.
    """
    schema = ANY_REPORT.json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs")
    header = components["MessageHeader"]
    optional = set(FILLED_BY_GATEWAY) | set(DEFAULTED_BY_AGREEMENT)
    header["required"] = [name for name in header.get("required", []) if name not in optional]
    header["description"] = (
        "The header of every report. The gateway fills what is left out: message_id, "
        "created_at and originator (this gateway's agency), and classification, tlp, "
        "handling, retention_days and priority from the agreement's defaults. A "
        "Cancellation may leave releasable_to out: it goes where the original went."
    )
    components["Report"] = schema
    return components


def examples_for(exchange: Exchange, agency: str) -> dict[str, dict[str, Any]]:
    """One example per report type from ``deploy/examples``, as ``agency`` would send it.

    The example's originator and ``agency`` swap places wherever they appear,
    times move to the present, the fields the gateway fills are left out, and a
    releasability the agreement would refuse becomes the feed's readers.
    """
    try:
        examples = load_examples()
    except OixError:
        return {}
    chosen: dict[str, dict[str, Any]] = {}
    for example in examples:
        name = example.name
        if example.report.report_type in chosen:
            continue
        # Each on its own, so each is created now and its deadlines lie ahead.
        report = freshen([example.report])[0]
        body: dict[str, Any] | None = _as_agency(report, agency, _sections(exchange))
        if body is not None and not isinstance(report, Cancellation):
            body = _routable(exchange, body, agency)
        if body is None:
            continue
        chosen[report.report_type] = {
            "summary": f"{report.report_type} ({name})",
            "value": body,
        }
    return chosen


def _sections(exchange: Exchange) -> dict[str, list[str]]:
    return {code: p.border_sections for code, p in exchange.agreement.parties.items()}


def _as_agency(report: Report, agency: str, sections: dict[str, list[str]]) -> dict[str, Any]:
    author = report.header.originator
    text = orjson.dumps(report.model_dump(mode="json", exclude_defaults=True)).decode()
    if author != agency:
        # The two parties swap places, and so do their border sections (by position),
        # so the example stays on the right border for the gateway's checks.
        swaps = {author: agency, agency: author}
        theirs, ours = sections.get(author, []), sections.get(agency, [])
        if theirs and ours:
            swaps |= {section: ours[i % len(ours)] for i, section in enumerate(theirs)}
            swaps |= {section: theirs[i % len(theirs)] for i, section in enumerate(ours)}
        text = _swap(text, swaps)
    body: dict[str, Any] = orjson.loads(text)
    body["type"] = report.report_type
    header = body["header"]
    if header.get("event_id") == header.get("message_id"):
        del header["event_id"]  # it defaults to the message id the gateway gives
    for name in FILLED_BY_GATEWAY:
        header.pop(name, None)
    header["links"] = [link for link in header.get("links", []) if link["relation"] != "SUPERSEDES"]
    if not header["links"]:
        del header["links"]
    return body


def _swap(text: str, replacements: dict[str, str]) -> str:
    """``text`` with every JSON string in ``replacements`` replaced, all at once."""
    marked = text
    for index, old in enumerate(replacements):
        marked = marked.replace(f'"{old}"', f'"\x00{index}\x00"')
    for index, new in enumerate(replacements.values()):
        marked = marked.replace(f'"\x00{index}\x00"', f'"{new}"')
    return marked


def _routable(exchange: Exchange, body: dict[str, Any], agency: str) -> dict[str, Any] | None:
    feed = exchange.agreement.feed_of(body["type"])
    readers = sorted(exchange.agreement.readers(agency, feed))
    if not readers:
        return None
    wanted = set(body["header"].get("releasable_to", [])) - {agency}
    if not wanted or not wanted <= set(readers):
        body["header"]["releasable_to"] = readers
    return body


def openapi_document(app: FastAPI, exchange: Exchange, agency: str) -> dict[str, Any]:
    """The OpenAPI document of ``app``: FastAPI's, with the report schemas and examples added."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(report_schemas())
    report = {"$ref": "#/components/schemas/Report"}
    examples = examples_for(exchange, agency)
    schema["paths"]["/v1/reports"]["post"]["requestBody"] = {
        "required": True,
        "content": {JSON: {"schema": report, "examples": examples}},
    }
    batch_example = [e["value"] for e in examples.values()]
    schema["paths"]["/v1/reports:batch"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            JSON: {
                "schema": {"type": "array", "items": report, "minItems": 1},
                "example": batch_example,
            },
            NDJSON_MEDIA_TYPES[0]: {
                "schema": {"type": "string", "description": "One report (JSON) per line."},
                "example": "\n".join(orjson.dumps(v).decode() for v in batch_example),
            },
        },
    }
    return schema
