"""Gateway settings: ``OIX_GATEWAY_*`` environment variables, validated at start.

They complement the shared :class:`~services.bus.Settings` (broker, agreement,
keys, data directory), which every service reads from ``OIX_*``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.bus import (
    AGENCY_CODE_PATTERN,
    ConfigError,
    Exchange,
    OixError,
    Settings,
    settings_error,
)


class GatewaySettings(BaseSettings):
    """What one gateway instance needs besides the shared settings."""

    model_config = SettingsConfigDict(env_prefix="OIX_GATEWAY_", extra="forbid")

    agency: Annotated[str, Field(pattern=AGENCY_CODE_PATTERN)] | None = Field(
        default=None,
        description="The agency this gateway publishes for (a party of the agreement).",
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8080
    tokens_file: Path | None = Field(
        default=None,
        description="Hashed bearer tokens; defaults to <data_dir>/gateway/tokens.yaml.",
    )
    idempotency_window: timedelta = Field(
        default=timedelta(hours=24),
        description="How long a retry with the same message id or Idempotency-Key replays "
        "the first answer (seconds or ISO 8601, e.g. PT24H).",
    )
    max_time_past: timedelta = Field(
        default=timedelta(days=366),
        description="How long ago a report's times (created_at, detected_at, validity, …) "
        "may lie (seconds or ISO 8601, e.g. P366D).",
    )
    max_time_ahead: timedelta = Field(
        default=timedelta(days=366),
        description="How far ahead a planned or validity time (needed_until, period_end, "
        "expected_until, due_at, …) may lie.",
    )
    max_clock_skew: timedelta = Field(
        default=timedelta(minutes=5),
        description="How far ahead a time of something that happened (created_at, "
        "detected_at, occurred_at) may lie: the client's clock may run a little fast.",
    )
    publish_timeout: Annotated[float, Field(gt=0, le=120)] = Field(
        default=5.0,
        description="Seconds to wait for the broker's acknowledgement before answering 503.",
    )
    retry_after: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5,
        description="Seconds a 503 answer tells the client to wait (Retry-After).",
    )
    request_head_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0,
        description="Seconds a connection may take to send a request's line and headers, "
        "counted from when it opens or from the previous answer; then it is closed.",
    )
    body_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="Seconds a request may take to send its whole body; then it is answered "
        "408 and the connection closed.",
    )
    keep_alive_timeout: Annotated[int, Field(ge=1, le=600)] = Field(
        default=5,
        description="Seconds an idle keep-alive connection stays open after an answer.",
    )
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000,
        description="Connections (and requests in progress) served at once; past it a new "
        "request is answered 503 at once.",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_batch_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    max_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    shutdown_grace: Annotated[float, Field(ge=0, le=300)] = Field(
        default=15.0,
        description="Seconds a stopping gateway waits for reports still in flight.",
    )
    broker_check_interval: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0,
        description="Seconds between checks that the broker still has the topics written to "
        "(the memory-only local broker forgets them when it restarts).",
    )
    recreate_topics: bool = Field(
        default=True,
        description="Re-create, with the partitions it had, a topic the broker lost that this "
        "gateway wrote to (the memory-only local broker loses all when it restarts); false "
        "where only `oix provision` creates topics: then reports are answered 503, naming "
        "the topic, until it is back.",
    )
    track_acknowledgements: bool = Field(
        default=True,
        description="Read partners' Acknowledgement messages for the status endpoint.",
    )
    ack_fetch_max_wait_ms: Annotated[int, Field(ge=10, le=10_000)] = 500
    ack_refresh_interval: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=10.0,
        description="Seconds between looks for new partner topics and partitions.",
    )


def load_gateway_settings(**overrides: Any) -> GatewaySettings:
    """Validated gateway settings, or a :class:`ConfigError` naming every bad variable."""
    try:
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc, "OIX_GATEWAY_", "gateway settings") from exc


def gateway_dir(settings: Settings) -> Path:
    """Where gateways keep their state: ``<data_dir>/gateway``."""
    return settings.data_dir / "gateway"


def tokens_path(settings: Settings, gateway: GatewaySettings) -> Path:
    """The token file a gateway reads."""
    return gateway.tokens_file or gateway_dir(settings) / "tokens.yaml"


def store_path(settings: Settings, agency: str) -> Path:
    """The SQLite file that remembers what ``agency`` published (shared by HTTP and SDK)."""
    return gateway_dir(settings) / f"{agency}.sqlite3"


def check_agency(exchange: Exchange, agency: str | None) -> str:
    """``agency`` if the agreement lists it and its private key loads; else a clear error.

    Raises:
        ConfigError: no agency, an agency the agreement does not know, or no usable key.
    """
    parties = ", ".join(sorted(exchange.agreement.parties))
    if agency is None:
        raise ConfigError(
            f"OIX_GATEWAY_AGENCY is not set: which agency does this gateway serve? ({parties})",
        )
    if agency not in exchange.agreement.parties:
        raise ConfigError(
            f"OIX_GATEWAY_AGENCY={agency} is not a party to the agreement ({parties})",
        )
    try:
        exchange.signer(agency)
    except OixError as exc:
        raise ConfigError(f"OIX_GATEWAY_AGENCY={agency}: cannot sign for it: {exc}") from exc
    return agency
