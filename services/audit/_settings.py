"""Settings of the audit consumer: ``OIX_AUDIT_*`` environment variables, validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.bus import ConfigError, Settings, settings_error

SQLITE_FILE = "audit.db"


class AuditSettings(BaseSettings):
    """What the audit consumer needs beyond the bus :class:`~services.bus.Settings`."""

    model_config = SettingsConfigDict(env_prefix="OIX_AUDIT_", extra="forbid")

    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the store: postgresql://… or sqlite:///…; unset means "
            f"SQLite in OIX_DATA_DIR/{SQLITE_FILE}."
        ),
    )
    group_id: str | None = Field(
        default=None,
        description="Kafka consumer group; unset means <topic prefix>.audit.",
    )
    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    batch_max_ms: int = Field(
        default=50, ge=1, description="A batch is written at the latest this long after it opens."
    )
    fetch_max_wait_ms: int = Field(default=50, ge=1)
    max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=1024)
    fetch_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Bounds the records one fetch brings in."
    )
    metadata_max_age_ms: int = Field(
        default=5000, ge=100, description="How soon a new topic is picked up."
    )
    session_timeout_ms: int = Field(default=10_000, ge=1)
    heartbeat_interval_ms: int = Field(default=3000, ge=1)
    rebalance_timeout_ms: int | None = None
    max_poll_interval_ms: int = Field(default=300_000, ge=1)
    open_processes: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Worker processes decoding and verifying records; 0 opens them in-process.",
    )
    reset_confirm_ms: int = Field(
        default=5000,
        ge=0,
        description=(
            "How long the broker's high watermark must stay below the stored position before "
            "the consumer concludes that the log went backwards."
        ),
    )
    stuck_after_ms: int = Field(
        default=60_000,
        ge=1,
        description=(
            "/healthz turns 503 when a partition has not advanced for this long while the "
            "broker's log holds more."
        ),
    )
    max_epochs_per_minute: int = Field(
        default=3,
        ge=1,
        description=(
            "/healthz turns 503 when more epochs than this began on one partition within a "
            "minute: a loop (a broker restart begins one or two)."
        ),
    )
    retry_max_backoff_ms: int = Field(default=5000, ge=10)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    commit_interval_ms: int = Field(default=1000, ge=10)
    purge_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "How often `oix audit run` purges the content of records past their retention; "
            "0 turns the schedule off (then run `oix audit purge` from cron)."
        ),
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(
        default=9464, ge=0, le=65535, description="Prometheus /metrics and /healthz; 0 picks one."
    )

    @field_validator("database_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    def resolved_url(self, settings: Settings) -> str:
        """The async SQLAlchemy URL of the store, SQLite in the data directory by default."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{Path(settings.data_dir) / SQLITE_FILE}"
        return async_url(self.database_url)

    def resolved_group(self, settings: Settings) -> str:
        """The consumer group, under the topic prefix so one prefixed ACL covers it."""
        return self.group_id or f"{settings.topic_prefix}.audit"


def async_url(url: str) -> str:
    """``url`` with the async driver this service uses (asyncpg or aiosqlite)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"{url!r} is not a database URL (postgresql://… or sqlite:///…)")
    base = scheme.split("+", 1)[0]
    if base in {"postgresql", "postgres"}:
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ConfigError(f"{scheme}:// is not supported: the audit store is PostgreSQL or SQLite")


def load_audit_settings(**overrides: object) -> AuditSettings:
    """Validated audit settings, or a :class:`~services.bus.ConfigError` naming each bad one."""
    try:
        return AuditSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise settings_error(exc, "OIX_AUDIT_", "audit settings") from exc
