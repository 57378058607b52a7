"""Settings: environment over config file, validated with errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bus import ConfigError, load_settings


def test_defaults_point_at_the_example_exchange(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OIX_BOOTSTRAP", raising=False)
    settings = load_settings()
    assert settings.bootstrap is None
    assert settings.topic_prefix == "oix"
    assert settings.agreement.name == "agreement.example.yaml"
    assert settings.agreement.is_file()


def test_config_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "oix.yaml"
    config.write_text("topic_prefix: fromfile\nlog_level: DEBUG\nbootstrap: kafka-1:9092\n")
    monkeypatch.setenv("OIX_CONFIG", str(config))
    monkeypatch.setenv("OIX_LOG_LEVEL", "ERROR")
    monkeypatch.delenv("OIX_BOOTSTRAP", raising=False)
    settings = load_settings()
    assert settings.topic_prefix == "fromfile"
    assert settings.bootstrap == "kafka-1:9092"
    assert settings.log_level == "ERROR"


def test_toml_config_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "oix.toml").write_text('topic_prefix = "tomlprefix"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OIX_CONFIG", raising=False)
    assert load_settings().topic_prefix == "tomlprefix"


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OIX_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"OIX_CONFIG=.*absent\.toml: no such file"):
        load_settings()


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIX_BOOTSTRAP", "nohost")
    monkeypatch.setenv("OIX_KAFKA_SECURITY_PROTOCOL", "SASL_SOMETHING")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "OIX_BOOTSTRAP: Value error, 'nohost' is not host:port" in message
    assert "OIX_KAFKA_SECURITY_PROTOCOL: Input should be" in message
