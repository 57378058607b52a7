"""What the browser console reads beyond the API's lists: messages found by id alone.

The feed's lines are events, which do not carry their current report's
signature; a report's links name a message id but not its originator. One
read answers both: the messages with the ids asked for that this agency may
see (a message not released to it is left out, as if it did not exist).
"""

from __future__ import annotations

import re
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel

from services.bus import FieldIssue
from services.liaison._errors import InvalidRequestError
from services.liaison._handling import visible_to
from services.liaison._http import Officer, create_app, problems, service_of
from services.liaison._models import Signature
from services.liaison._service import LiaisonService
from services.liaison._tables import messages
from services.liaison._views import split_list

MAX_IDS = 100
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_M = messages.c

router = APIRouter(tags=["console"])


class MessageRef(BaseModel):
    """Where a message belongs: its originator and event, its type and signature."""

    originator: str
    message_id: str
    event_id: str
    report_type: str
    title: str
    signature: Signature


def _ids(value: str) -> list[str]:
    found = sorted({v.strip().lower() for v in value.split(",") if v.strip()})
    if len(found) > MAX_IDS:
        raise InvalidRequestError(
            "too many message ids", [FieldIssue("ids (query)", f"at most {MAX_IDS}")]
        )
    for item in found:
        if not _UUID.fullmatch(item):
            raise InvalidRequestError(
                "a message id is not valid", [FieldIssue("ids (query)", f"{item!r} is not a UUID")]
            )
    return found


@router.get(
    "/v1/console/messages",
    summary="Messages by id (the console: feed signatures, where a link leads)",
    response_model=list[MessageRef],
    responses=problems(401, 403, 422),
)
async def messages_by_id(
    request: Request,
    caller: Officer,
    ids: Annotated[
        str,
        Query(description="Message ids (UUIDs), comma-separated, at most 100.", max_length=4000),
    ],
) -> list[MessageRef]:
    """The messages among ``ids`` that the officer's agency may see (others are left out)."""
    wanted = _ids(ids)
    if not wanted:
        return []
    store = service_of(request).store
    columns = [
        _M.originator,
        _M.message_id,
        _M.event_id,
        _M.report_type,
        _M.title,
        _M.signature_status,
        _M.key_id,
        _M.releasable_to,
    ]
    async with store.reading() as connection:
        rows = (
            await connection.execute(
                sa.select(*columns).where(_M.agency == caller.agency, _M.message_id.in_(wanted))
            )
        ).all()
    return [
        MessageRef(
            originator=row.originator,
            message_id=row.message_id,
            event_id=row.event_id,
            report_type=row.report_type,
            title=row.title,
            signature=Signature(status=row.signature_status, key_id=row.key_id),
        )
        for row in rows
        if visible_to(caller.agency, split_list(row.releasable_to))
    ]


def console_app(service: LiaisonService) -> FastAPI:
    """The liaison API with the console's reads (the console's files are mounted by the API)."""
    app = create_app(service)
    app.include_router(router)
    return app
