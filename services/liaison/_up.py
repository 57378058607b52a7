"""The liaison services inside ``oix up``: one per party, publishing through its gateway."""

from __future__ import annotations

import asyncio
import os

import orjson
from pydantic import SecretStr

from services.bus import get_logger
from services.host import PUBLISHING, Ready, UpContext
from services.liaison._auth import add_officer, new_password, new_token, token_hash
from services.liaison._server import LiaisonServer
from services.liaison._service import LiaisonService
from services.liaison._settings import liaison_dir, load_liaison_settings
from services.liaison._store import now_ms

log = get_logger(__name__)
GATEWAY_WAIT_S = 60.0


async def run_in_up(ctx: UpContext, ready: Ready) -> None:
    """Start a liaison service per agency on consecutive ports from ``OIX_LIAISON_PORT``.

    Each publishes through its agency's gateway (offered by the gateway's part
    of ``oix up``) and gets an example officer whose password is printed once:
    the officers file is made anew at every start. ``oix feed --as AGENCY``
    finds each service and a bearer token in ``<data_dir>/liaison/up.json``.
    """
    base = load_liaison_settings()
    agencies = sorted(ctx.exchange.agreement.parties)
    directory = liaison_dir(ctx.settings)
    officers_file = directory / "up-officers.yaml"
    officers_file.unlink(missing_ok=True)
    passwords = {}
    for agency in agencies:
        passwords[agency] = new_password()
        add_officer(officers_file, agency, f"example-{agency.lower()}", passwords[agency])
    services: list[LiaisonService] = []
    servers: list[LiaisonServer] = []
    try:
        for index, agency in enumerate(agencies):
            path = await ctx.offers.wait(PUBLISHING, agency, GATEWAY_WAIT_S)
            if path is None:
                log.warning("no gateway offered for the agency: read-only", agency=agency)
            liaison = base.model_copy(
                update={
                    "agency": agency,
                    "officers_file": officers_file,
                    "port": base.port + index if base.port else 0,
                    "gateway_url": None if path is None else path.url,
                    "gateway_token": None if path is None else SecretStr(path.token),
                }
            )
            service = LiaisonService(
                ctx.settings, liaison, ctx.exchange, ctx.bootstrap, migrate_first=True
            )
            await service.start()
            services.append(service)
            server = LiaisonServer(service)
            await server.start()
            servers.append(server)
        await _write_feed_access(ctx, servers)
        lines = []
        for server in servers:
            agency = server.service.agency
            lines += [
                f"{agency:<8} {server.url}/docs",
                f"{agency:<8} login example-{agency.lower()} {passwords[agency]}",
            ]
        ready("liaison", lines)
        await ctx.stop.wait()
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
        await asyncio.gather(*(s.stop() for s in services))


async def _write_feed_access(ctx: UpContext, servers: list[LiaisonServer]) -> None:
    """``up.json``: each service's URL and a bearer token of its example officer (mode 600)."""
    access = {}
    for server in servers:
        service = server.service
        token = new_token()
        at = now_ms()
        await service.store.create_session(
            {
                "token_sha256": token_hash(token),
                "agency": service.agency,
                "officer": f"example-{service.agency.lower()}",
                "via": "bearer",
                "csrf": "",
                "created_at": at,
                "expires_at": at + int(service.liaison.session_hours * 3_600_000),
            }
        )
        access[service.agency] = {"url": server.url, "token": token}
    path = liaison_dir(ctx.settings) / "up.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(access, option=orjson.OPT_INDENT_2))
