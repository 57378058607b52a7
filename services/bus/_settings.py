"""Settings: ``OIX_*`` environment variables over an optional config file, validated at start.

The config file is TOML or YAML, found at ``OIX_CONFIG`` (or ``oix.toml`` in
the working directory); environment variables win over it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from services.bus._errors import ConfigError


def _config_file() -> Path | None:
    explicit = os.environ.get("OIX_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"OIX_CONFIG={explicit}: no such file")
        return path
    local = Path("oix.toml")
    return local if local.is_file() else None


def _secrets_dir() -> Path | None:
    explicit = os.environ.get("OIX_SECRETS_DIR")
    if not explicit:
        return None
    path = Path(explicit)
    if not path.is_dir():
        raise ConfigError(f"OIX_SECRETS_DIR={explicit}: no such directory")
    return path


def repo_root() -> Path:
    """The checkout this package runs from (or the packaged data, when installed)."""
    here = Path(__file__).resolve()
    source = here.parents[2]
    if (source / "deploy").is_dir():
        return source
    return here.parents[1] / "_data"


class Settings(BaseSettings):
    """Everything an OIX service needs to know at start."""

    model_config = SettingsConfigDict(env_prefix="OIX_", extra="forbid")

    env: Literal["development", "production"] = Field(
        default="development",
        description="production refuses the demo signing keys shipped in deploy/keys.",
    )
    bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means the embedded local broker.",
    )
    topic_prefix: str = "oix"
    agreement: Path = Field(
        default_factory=lambda: repo_root() / "deploy" / "agreement.example.yaml"
    )
    keys_dir: Path = Field(default_factory=lambda: repo_root() / "deploy" / "keys")
    schemas_dir: Path = Field(default_factory=lambda: repo_root() / "schemas")
    data_dir: Path = Field(default_factory=lambda: Path(".oix"))
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tansu_bin: Path | None = None
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: use the idempotent producer where the broker supports it.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    @field_validator("bootstrap")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server.strip()!r} is not host:port")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003  # no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003  # nor secret dirs
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then environment, then secret files (``OIX_SECRETS_DIR``), then the file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets = _secrets_dir()
        if secrets is not None:
            # Docker and Kubernetes mount secrets as files: oix_kafka_sasl_password, ...
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets))
        path = _config_file()
        if path is not None and path.suffix in {".yaml", ".yml"}:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        elif path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def settings_error(error: ValidationError, env_prefix: str, what: str) -> ConfigError:
    """A :class:`ConfigError` naming every bad ``<env_prefix>*`` variable and the reason."""
    lines = [
        f"{env_prefix}{'_'.join(str(p) for p in item['loc']).upper()}: {item['msg']}"
        for item in error.errors(include_url=False)
    ]
    return ConfigError(f"invalid {what}:\n  " + "\n  ".join(lines))


def load_settings(**overrides: Any) -> Settings:
    """Validated settings, or a :class:`ConfigError` naming every bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc, "OIX_", "settings") from exc
