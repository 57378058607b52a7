"""Secrets from files mounted at run time (OIX_SECRETS_DIR), as Docker and Kubernetes mount them."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bus import ConfigError, load_settings


def test_a_secret_file_sets_the_setting_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oix_kafka_sasl_password").write_text("from-a-file\n", encoding="utf-8")
    monkeypatch.setenv("OIX_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("OIX_KAFKA_SASL_PASSWORD", raising=False)
    settings = load_settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)
    monkeypatch.setenv("OIX_KAFKA_SASL_PASSWORD", "from-the-environment")
    password = load_settings().kafka_sasl_password
    assert password is not None
    assert password.get_secret_value() == "from-the-environment"


def test_without_secrets_dir_no_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oix_kafka_sasl_password").write_text("unused", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OIX_SECRETS_DIR", raising=False)
    monkeypatch.delenv("OIX_KAFKA_SASL_PASSWORD", raising=False)
    assert load_settings().kafka_sasl_password is None


def test_a_missing_secrets_dir_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OIX_SECRETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"OIX_SECRETS_DIR=.*nowhere: no such directory"):
        load_settings()
