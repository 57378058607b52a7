"""``GET /v1/findings``: what the broker lost after acknowledging it, as the gateway found it.

A finding is persisted in the gateway's store, counted
(``oix_gateway_findings_total``) and logged at warning level when it is
made; this route lists them for the agency's systems and operators.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from services.gateway._openapi import problem_responses
from services.gateway._routes import JSON, authenticate, bearer, service_of

findings = APIRouter()
"""The findings of the gateway's broker checks."""


class FindingBody(BaseModel):
    """One report the broker lost after the gateway answered 201 for it."""

    kind: str = Field(description="coordinates_reused: another report was acknowledged there.")
    found_at: str
    topic: str
    partition: int
    offset: int
    broker_epoch: int
    lost_message_id: str = Field(description="The report that is no longer in the log.")
    by_message_id: str = Field(description="The report acknowledged at its coordinates.")
    detail: str


class FindingsBody(BaseModel):
    """Every finding, oldest first, and the current broker epoch."""

    broker_epoch: int
    findings: list[FindingBody]


@findings.get(
    "/v1/findings",
    tags=["reports"],
    summary="Reports the broker lost after acknowledging them",
    response_model=None,
    responses={200: {"model": FindingsBody}, **problem_responses(401, 403)},
)
async def list_findings(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Response:
    """Findings: a retry of a lost report (same message id) publishes it again."""
    service = service_of(request)
    authenticate(service, credentials.credentials if credentials is not None else None)
    store = service.pipeline.store
    body = {
        "broker_epoch": store.broker_epoch().epoch,
        "findings": [f.as_json() for f in store.findings()],
    }
    return Response(orjson.dumps(body), media_type=JSON)
