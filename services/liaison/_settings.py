"""Settings of the liaison service: ``OIX_LIAISON_*`` environment variables, validated at start.

They complement the shared :class:`~services.bus.Settings` (broker, agreement,
keys, data directory), which every service reads from ``OIX_*``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.bus import AGENCY_CODE_PATTERN, ConfigError, Exchange, Settings, settings_error

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Where the web console's files go (served at ``/console/`` when the folder exists)."""


class LiaisonSettings(BaseSettings):
    """What one liaison service needs besides the shared settings."""

    model_config = SettingsConfigDict(env_prefix="OIX_LIAISON_", extra="forbid")

    agency: Annotated[str, Field(pattern=AGENCY_CODE_PATTERN)] | None = Field(
        default=None,
        description="The agency whose officers this service serves (`--as`).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store: postgresql://… or sqlite:///…; unset means "
        "SQLite in OIX_DATA_DIR/liaison/liaison-<AGENCY>.db.",
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8090
    group_id: str | None = Field(
        default=None,
        description="Kafka consumer group; unset means <topic prefix>.<AGENCY>.liaison (under "
        "the agency's own group prefix, which its ACLs allow).",
    )
    gateway_url: str | None = Field(
        default=None,
        description="The agency's own gateway: acknowledgements and answers are published "
        "through it. Unset: officers can read but not acknowledge or answer.",
    )
    gateway_token: SecretStr | None = Field(
        default=None, description="A bearer token of the agency's gateway."
    )
    gateway_token_file: Path | None = Field(
        default=None, description="A file holding the gateway token (a mounted secret)."
    )
    gateway_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    officers_file: Path | None = Field(
        default=None,
        description="Officers and their argon2 password hashes; defaults to "
        "<data_dir>/liaison/officers.yaml.",
    )
    webhooks_file: Path | None = Field(
        default=None,
        description="Webhook endpoints of agency systems; defaults to "
        "<data_dir>/liaison/webhooks.yaml (none when the file does not exist).",
    )
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    cookie_secure: bool = Field(
        default=False,
        description="Mark the session cookie Secure (set it when the console is served "
        "over HTTPS, as in production).",
    )
    static_dir: Path = Field(default=STATIC_DIR, description="The web console's files.")
    batch_max_records: int = Field(default=1000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    batch_max_ms: int = Field(default=10, ge=0)
    fetch_max_wait_ms: int = Field(default=20, ge=1)
    max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=1024)
    metadata_max_age_ms: int = Field(default=5000, ge=100)
    session_timeout_ms: int = Field(default=10_000, ge=1)
    heartbeat_interval_ms: int = Field(default=3000, ge=1)
    rebalance_timeout_ms: int | None = None
    open_processes: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Worker processes decoding and verifying records; 0 opens them in-process.",
    )
    reset_confirm_ms: int = Field(default=5000, ge=0)
    stuck_after_ms: int = Field(default=60_000, ge=1)
    retry_max_backoff_ms: int = Field(default=5000, ge=10)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    commit_interval_ms: int = Field(default=1000, ge=10)
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Attempts before a delivery is dead-lettered."
    )
    webhook_backoff_ms: int = Field(
        default=1000, ge=1, description="Wait before the second attempt; doubles each time."
    )
    webhook_max_backoff_ms: int = Field(default=300_000, ge=1)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    stream_poll_ms: int = Field(
        default=1000,
        ge=10,
        description="How often the live stream looks for changes written by other replicas.",
    )
    stream_keep: int = Field(
        default=4096,
        ge=0,
        le=1_000_000,
        description="Changes this replica committed that it keeps in memory for the live "
        "streams (sent without reading the store); 0: every stream reads the store.",
    )

    @field_validator("database_url", "gateway_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    def required_agency(self, exchange: Exchange) -> str:
        """The agency, if the agreement lists it.

        Raises:
            ConfigError: none given, or one the agreement does not know.
        """
        parties = ", ".join(sorted(exchange.agreement.parties))
        if self.agency is None:
            raise ConfigError(
                f"OIX_LIAISON_AGENCY (--as) is not set: which agency's officers does this "
                f"service serve? ({parties})",
            )
        if self.agency not in exchange.agreement.parties:
            raise ConfigError(
                f"OIX_LIAISON_AGENCY={self.agency} is not a party to the agreement ({parties})"
            )
        return self.agency

    def resolved_url(self, settings: Settings, agency: str) -> str:
        """The async SQLAlchemy URL of the store, SQLite in the data directory by default."""
        if self.database_url is None:
            path = liaison_dir(settings) / f"liaison-{agency}.db"
            return f"sqlite+aiosqlite:///{path}"
        return async_url(self.database_url)

    def resolved_group(self, settings: Settings, agency: str) -> str:
        """The consumer group: one per agency, so the agency's replicas share the work."""
        return self.group_id or f"{settings.topic_prefix}.{agency}.liaison"

    def officers_path(self, settings: Settings) -> Path:
        """The officers file."""
        return self.officers_file or liaison_dir(settings) / "officers.yaml"

    def webhooks_path(self, settings: Settings) -> Path:
        """The webhooks file."""
        return self.webhooks_file or liaison_dir(settings) / "webhooks.yaml"

    def gateway_secret(self) -> str | None:
        """The gateway token, from ``gateway_token`` or ``gateway_token_file``.

        Raises:
            ConfigError: the token file cannot be read or is empty.
        """
        if self.gateway_token is not None:
            return self.gateway_token.get_secret_value().strip() or None
        path = self.gateway_token_file
        if path is None:
            return None
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"OIX_LIAISON_GATEWAY_TOKEN_FILE={path}: cannot read it: {exc.strerror}"
            ) from exc
        if not token:
            raise ConfigError(f"OIX_LIAISON_GATEWAY_TOKEN_FILE={path}: the file is empty")
        return token


def liaison_dir(settings: Settings) -> Path:
    """Where liaison services keep their local state: ``<data_dir>/liaison``."""
    return settings.data_dir / "liaison"


def async_url(url: str) -> str:
    """``url`` with the async driver this service uses (asyncpg or aiosqlite)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"OIX_LIAISON_DATABASE_URL: {url!r} is not a database URL "
            "(postgresql://… or sqlite:///…)"
        )
    base = scheme.split("+", 1)[0]
    if base in {"postgresql", "postgres"}:
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ConfigError(
        f"OIX_LIAISON_DATABASE_URL: {scheme}:// is not supported: the liaison store is "
        "PostgreSQL or SQLite"
    )


def load_liaison_settings(**overrides: Any) -> LiaisonSettings:
    """Validated liaison settings, or a :class:`ConfigError` naming every bad variable."""
    try:
        return LiaisonSettings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc, "OIX_LIAISON_", "liaison settings") from exc
