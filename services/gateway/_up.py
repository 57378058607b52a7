"""The gateways inside ``oix up``: one per party of the example agreement."""

from __future__ import annotations

import asyncio

from services.gateway._server import GatewayServer
from services.gateway._service import GatewayService
from services.gateway._settings import gateway_dir, load_gateway_settings
from services.gateway._tokens import create_token
from services.host import PUBLISHING, PublishingPath, Ready, UpContext


async def run_in_up(ctx: UpContext, ready: Ready) -> None:
    """Start a gateway per agency on consecutive ports from ``OIX_GATEWAY_PORT``.

    Each gets a fresh example token, printed once: the token file is made anew
    at every start, so a token from an earlier run no longer works. A port in
    use stops ``oix up`` with the variable to set (``OIX_GATEWAY_PORT=0`` picks
    free ports).
    """
    base = load_gateway_settings()
    agencies = sorted(ctx.exchange.agreement.parties)
    tokens_file = gateway_dir(ctx.settings) / "up-tokens.yaml"
    tokens_file.unlink(missing_ok=True)
    tokens = {a: create_token(tokens_file, a, f"example-{a.lower()}") for a in agencies}
    services: list[GatewayService] = []
    servers: list[GatewayServer] = []
    try:
        for index, agency in enumerate(agencies):
            gateway = base.model_copy(
                update={
                    "agency": agency,
                    "tokens_file": tokens_file,
                    "port": base.port + index if base.port else 0,
                },
            )
            service = GatewayService(ctx.settings, gateway, ctx.exchange, ctx.bootstrap)
            await service.start()
            services.append(service)
            server = GatewayServer(service)
            await server.start()
            servers.append(server)
        for server in servers:
            # The agency's liaison service publishes acknowledgements and answers here.
            agency = server.service.agency
            token = create_token(tokens_file, agency, f"liaison-{agency.lower()}")
            ctx.offers.publish(PUBLISHING, agency, PublishingPath(agency, server.url, token))
        # Two short lines per agency: a token must not wrap on an 80-column console.
        lines = []
        for server in servers:
            agency = server.service.agency
            lines += [f"{agency:<8} {server.url}/docs", f"{agency:<8} token {tokens[agency]}"]
        ready("gateway", lines)
        await ctx.stop.wait()
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
        await asyncio.gather(*(s.stop() for s in services))
