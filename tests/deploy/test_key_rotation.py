"""Signing-key rotation: two valid keys during an overlap, judged by the signed created_at.

Also: the demo keys shipped in deploy/keys are refused with OIX_ENV=production.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.bus import (
    AgreementError,
    ConfigError,
    Exchange,
    Settings,
    SignatureStatus,
    SigningError,
    load_examples,
    parse_agreement,
)
from services.bus._rotation import (
    plan_rotation,
    rotated_agreement,
    write_private_key,
)

REPO = Path(__file__).resolve().parents[2]
AGREEMENT = REPO / "deploy" / "agreement.example.yaml"
KEYS = REPO / "deploy" / "keys"
EXAMPLE = next(
    e.report for e in load_examples(REPO / "deploy" / "examples") if e.name.startswith("06")
)  # an incident by LT-VSAT
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _rotated(tmp_path: Path, overlap: timedelta = timedelta(days=14)) -> tuple[Path, Path, str]:
    """The example agreement with LT-VSAT rotated at NOW: (agreement, keys dir, new key id)."""
    text = AGREEMENT.read_text(encoding="utf-8")
    rotation = plan_rotation(parse_agreement(text, "example"), "LT-VSAT", NOW, overlap)
    changed = rotated_agreement(text, rotation)
    assert changed is not None
    agreement = tmp_path / "agreement.yaml"
    agreement.write_text(changed, encoding="utf-8")
    keys = tmp_path / "keys"
    keys.mkdir()
    for pem in KEYS.glob("*.pem"):
        (keys / pem.name).write_bytes(pem.read_bytes())
    write_private_key(keys, rotation.key_id, rotation.pair.private_pem)
    return agreement, keys, rotation.key_id


def _exchange(agreement: Path, keys: Path) -> Exchange:
    return Exchange.from_settings(
        Settings(agreement=agreement, keys_dir=keys, schemas_dir=REPO / "schemas")
    )


def _sealed_at(exchange: Exchange, created_at: datetime, key_id: str) -> tuple[bytes, list]:
    """LT-VSAT's example incident created at ``created_at``, signed with ``key_id``."""
    report = EXAMPLE.model_copy(
        update={"header": EXAMPLE.header.model_copy(update={"created_at": created_at})}
    )
    signer = exchange.signer("LT-VSAT", now=created_at)
    if signer.key_id != key_id:  # sign with the other key on purpose
        from services.bus import Signer

        signer = Signer.from_pem_file("LT-VSAT", key_id, exchange.keys_dir / f"{key_id}.pem")
    from services.bus import Sealer

    sealed = Sealer(exchange.codec, signer).seal(report)
    return sealed.value, sealed.headers


def test_rotation_adds_a_key_and_bounds_the_old_one(tmp_path: Path) -> None:
    agreement_path, _keys, new_id = _rotated(tmp_path)
    agreement = parse_agreement(agreement_path.read_text(encoding="utf-8"), "rotated")
    keys = {k.id: k for k in agreement.parties["LT-VSAT"].keys}
    assert set(keys) == {"LT-VSAT-2026-1", new_id}
    assert new_id == "LT-VSAT-2026-2"
    assert keys["LT-VSAT-2026-1"].not_after == NOW + timedelta(days=14)
    assert keys[new_id].not_after is None
    # Comments and every other party are kept as they were.
    original = AGREEMENT.read_text(encoding="utf-8")
    added = set(agreement_path.read_text(encoding="utf-8").splitlines()) - set(
        original.splitlines()
    )
    assert len(added) == 3
    assert all(
        line.startswith(("        not_after:", "      - id:", "        public_key:"))
        for line in added
    )


def test_receivers_accept_both_keys_until_the_old_ones_not_after(tmp_path: Path) -> None:
    agreement, keys, new_id = _rotated(tmp_path)
    exchange = _exchange(agreement, keys)
    old_id = "LT-VSAT-2026-1"
    not_after = NOW + timedelta(days=14)

    def status(created_at: datetime, key_id: str) -> tuple[SignatureStatus, str]:
        value, headers = _sealed_at(exchange, created_at, key_id)
        verification = exchange.opener.open(value, headers).verification
        return verification.status, verification.reason

    during = NOW + timedelta(days=1)
    assert status(during, old_id)[0] is SignatureStatus.VALID
    assert status(during, new_id)[0] is SignatureStatus.VALID
    just_before = not_after - timedelta(milliseconds=1)
    assert status(just_before, old_id)[0] is SignatureStatus.VALID
    after, reason = status(not_after, old_id)
    assert after is SignatureStatus.INVALID
    assert old_id in reason
    assert "valid until 2026-06-15T12:00:00+00:00" in reason
    assert status(not_after + timedelta(days=365), new_id)[0] is SignatureStatus.VALID


def test_a_gateway_signs_with_the_new_key_during_the_overlap(tmp_path: Path) -> None:
    agreement, keys, new_id = _rotated(tmp_path)
    exchange = _exchange(agreement, keys)
    assert exchange.signer("LT-VSAT", now=NOW + timedelta(days=1)).key_id == new_id
    # Without the new key's file, the old key still signs until its not_after ...
    (keys / f"{new_id}.pem").unlink()
    assert exchange.signer("LT-VSAT", now=NOW + timedelta(days=1)).key_id == "LT-VSAT-2026-1"
    # ... and after it, nothing does: a clear error, not records every receiver refuses.
    with pytest.raises(SigningError, match="no key of LT-VSAT is valid now"):
        exchange.signer("LT-VSAT", now=NOW + timedelta(days=15))


def test_a_second_rotation_inside_the_overlap_is_refused(tmp_path: Path) -> None:
    agreement, _keys, _new = _rotated(tmp_path)
    rotated = parse_agreement(agreement.read_text(encoding="utf-8"), "rotated")
    with pytest.raises(SigningError, match="still in the overlap"):
        plan_rotation(rotated, "LT-VSAT", NOW + timedelta(days=1), timedelta(days=14))
    later = plan_rotation(rotated, "LT-VSAT", NOW + timedelta(days=20), timedelta(days=14))
    assert later.key_id == "LT-VSAT-2026-3"


def test_three_keys_valid_at_once_are_refused() -> None:
    data = yaml.safe_load(AGREEMENT.read_text(encoding="utf-8"))
    keys = data["parties"]["LT-VSAT"]["keys"]
    for number in (2, 3):
        pem = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        import base64

        keys.append({"id": f"LT-VSAT-2026-{number}", "public_key": base64.b64encode(pem).decode()})
    with pytest.raises(AgreementError, match=r"parties\.LT-VSAT\.keys: .* valid at the same time"):
        parse_agreement(yaml.safe_dump(data), "three.yaml")
    keys[0]["not_after"] = "2026-06-15T12:00:00Z"
    keys[1]["not_before"] = "2026-07-01T00:00:00Z"
    keys[1]["not_after"] = "2026-06-01T00:00:00Z"
    with pytest.raises(AgreementError, match="not_after must be later than not_before"):
        parse_agreement(yaml.safe_dump(data), "window.yaml")


def test_oix_keys_rotate_writes_a_private_key_and_prints_the_change(tmp_path: Path) -> None:
    agreement = tmp_path / "agreement.yaml"
    agreement.write_text(AGREEMENT.read_text(encoding="utf-8"), encoding="utf-8")
    keys = tmp_path / "secret-keys"
    env = {
        **os.environ,
        "OIX_AGREEMENT": str(agreement),
        "OIX_KEYS_DIR": str(keys),
        "OIX_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "rotate", "UA-DPSU", "--overlap-days", "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = keys / "UA-DPSU-2026-2.pem"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert f"--- {agreement}" in done.stdout
    # The printed diff applies with patch and gives an agreement that parses.
    diff = done.stdout[done.stdout.index(f"--- {agreement}") :]
    subprocess.run(["patch", "-p0", "-s"], input=diff, text=True, cwd="/", check=True)
    rotated = parse_agreement(agreement.read_text(encoding="utf-8"), "patched")
    ids = [k.id for k in rotated.parties["UA-DPSU"].keys]
    assert ids == ["UA-DPSU-2026-1", "UA-DPSU-2026-2"]
    private = serialization.load_pem_private_key(written.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    # A second rotation with the same id refuses to overwrite the private key.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "keys",
            "rotate",
            "UA-DPSU",
            "--key-id",
            "UA-DPSU-2026-2",
        ],
        capture_output=True,
        text=True,
        env={**env, "OIX_AGREEMENT": str(AGREEMENT)},
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert "refusing to overwrite a private key" in again.stderr


def test_production_refuses_the_demo_keys(tmp_path: Path) -> None:
    settings = Settings(
        env="production", agreement=AGREEMENT, keys_dir=KEYS, schemas_dir=REPO / "schemas"
    )
    with pytest.raises(ConfigError, match=r"OIX_ENV=production: .* demo keys") as caught:
        Exchange.from_settings(settings)
    assert "parties.LT-VSAT.keys.LT-VSAT-2026-1" in str(caught.value)
    # Development (the default) uses them, for the demo and the tests.
    assert Exchange.from_settings(settings.model_copy(update={"env": "development"}))


def test_production_accepts_an_agreement_with_real_keys(tmp_path: Path) -> None:
    data = yaml.safe_load(AGREEMENT.read_text(encoding="utf-8"))
    import base64

    for party in data["parties"].values():
        raw = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        party["keys"] = [
            {"id": f"{party['country']}-real-1", "public_key": base64.b64encode(raw).decode()}
        ]
    agreement = tmp_path / "real.yaml"
    agreement.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = Settings(env="production", agreement=agreement, schemas_dir=REPO / "schemas")
    assert Exchange.from_settings(settings).agreement.parties["LT-VSAT"].keys[0].id == "LT-real-1"


def test_oix_env_production_is_read_from_the_environment(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "agreement", "topics"],
        capture_output=True,
        text=True,
        env={**os.environ, "OIX_ENV": "production", "OIX_LOG_FORMAT": "json"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "OIX_ENV=production" in done.stderr
    assert "demo keys" in done.stderr
