"""Tokens (stored hashed, shown once), gateway settings and start-up errors that name the cause."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from gateway_support import AGENCY, make_gateway_settings

from services.bus import REPORT_MODELS, ConfigError, Exchange, Settings, parse_report
from services.gateway import (
    GatewayService,
    GatewaySettings,
    create_token,
    hash_token,
    revoke_token,
)
from services.gateway._claims import claim_check
from services.gateway._intake import fill_header
from services.gateway._openapi import examples_for
from services.gateway._settings import load_gateway_settings
from services.gateway._tokens import TokenRegistry, read_tokens

REPO = Path(__file__).resolve().parents[2]


def test_tokens_are_stored_hashed_and_owner_readable_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = create_token(path, AGENCY, "lv-incidents")
    text = path.read_text()
    assert token not in text
    assert hash_token(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [entry] = read_tokens(path)
    assert (entry.name, entry.agency) == ("lv-incidents", AGENCY)
    with pytest.raises(ConfigError, match="exists"):
        create_token(path, AGENCY, "lv-incidents")


def test_the_registry_sees_new_and_revoked_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    first = create_token(path, AGENCY, "one")
    registry = TokenRegistry(path, recheck_every=0)
    assert registry.lookup(first) is not None
    assert registry.lookup("oixgw_guess") is None
    second = create_token(path, "LT-VSAT", "two")
    caller = registry.lookup(second)
    assert caller is not None
    assert (caller.name, caller.agency) == ("two", "LT-VSAT")
    revoke_token(path, "one")
    assert registry.lookup(first) is None
    with pytest.raises(ConfigError, match="no token named"):
        revoke_token(path, "one")


def test_a_malformed_token_file_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - name: ok\n    agency: lv\n    sha256: abc\n")
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.agency"):
        read_tokens(path)
    path.write_text("tokens: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_tokens(path)


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIX_GATEWAY_PORT", "99999")
    monkeypatch.setenv("OIX_GATEWAY_PUBLISH_TIMEOUT", "-1")
    with pytest.raises(ConfigError) as error:
        load_gateway_settings()
    assert "OIX_GATEWAY_PORT" in str(error.value)
    assert "OIX_GATEWAY_PUBLISH_TIMEOUT" in str(error.value)


def test_start_up_errors_say_what_to_do(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.yaml"
    with pytest.raises(ConfigError, match="OIX_GATEWAY_AGENCY is not set"):
        GatewayService(settings, make_gateway_settings(tokens, agency=None), exchange)
    with pytest.raises(ConfigError, match="not a party"):
        GatewayService(settings, make_gateway_settings(tokens, agency="XX-NOBODY"), exchange)
    with pytest.raises(ConfigError, match="oix gateway token create LV-VRS"):
        GatewayService(settings, make_gateway_settings(tokens), exchange)
    no_keys = settings.model_copy(update={"keys_dir": tmp_path})
    with pytest.raises(ConfigError, match="cannot sign for it"):
        GatewayService(no_keys, make_gateway_settings(tokens), Exchange.from_settings(no_keys))


@pytest.mark.parametrize("agency", ["LT-VSAT", "LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"])
def test_every_documented_example_is_valid_and_routable_for_every_agency(
    exchange: Exchange, agency: str
) -> None:
    examples = examples_for(exchange, agency)
    assert set(examples) == set(REPORT_MODELS)
    claims = claim_check(exchange.agreement, GatewaySettings())
    for name, entry in examples.items():
        if name == "Cancellation":
            continue
        report = parse_report(fill_header(entry["value"], agency, exchange.agreement))
        header = report.header
        assert header.originator == agency
        assert exchange.router.topics_for(report.report_type, agency, header.releasable_to)
        claims.check(report)  # its times and border sections are ones the gateway takes


def test_token_create_prints_the_token_once(tmp_path: Path) -> None:
    env = {**os.environ, "OIX_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "gateway",
            "token",
            "create",
            AGENCY,
            "--name",
            "cli",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    [token] = [word for word in done.stdout.split() if word.startswith("oixgw_")]
    path = tmp_path / "gateway" / "tokens.yaml"
    assert token not in path.read_text()
    assert TokenRegistry(path).lookup(token) is not None
    listed = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway", "token", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    assert "cli" in listed.stdout
    assert token not in listed.stdout
