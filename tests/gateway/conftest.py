"""Fixtures for gateway tests: token files, gateway settings, a running gateway, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gateway_support import (
    AGENCY,
    PARTNER,
    RunningGateway,
    bearer,
    make_gateway_settings,
    running_gateway,
)

from services.bus import Exchange, Settings
from services.gateway import GatewaySettings, create_token


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return tmp_path / "tokens.yaml"


@pytest.fixture
def tokens(tokens_file: Path) -> dict[str, str]:
    """One token for the gateway's agency, one for a partner agency."""
    return {
        AGENCY: create_token(tokens_file, AGENCY, "lv-system"),
        PARTNER: create_token(tokens_file, PARTNER, "lt-system"),
    }


@pytest.fixture
def gateway_settings(tokens_file: Path, tokens: dict[str, str]) -> GatewaySettings:
    return make_gateway_settings(tokens_file)


@pytest.fixture
async def gateway(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings, gateway_settings, exchange) as running:
        yield running


@pytest.fixture
async def client(
    gateway: RunningGateway, tokens: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the running gateway, authenticated as its agency."""
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=bearer(tokens[AGENCY]), timeout=30.0
    ) as http:
        yield http
