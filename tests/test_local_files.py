"""Local files and secrets: data readable by its owner only, private keys refused when exposed.

Issue 8: the audit's SQLite store (decoded reports, possibly personal data) and
the gateway's were created 0644 in 0755 directories, and private key files
were loaded whatever their mode.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from services.audit import AuditStore, migrate
from services.bus import (
    Exchange,
    Settings,
    SigningError,
    generate_key_pair,
    private_sqlite,
)
from services.gateway._store import Store
from services.liaison import LiaisonStore, add_endpoint, add_officer, read_officers
from services.liaison import migrate as migrate_liaison

REPO = Path(__file__).resolve().parents[1]
AGREEMENT = REPO / "deploy" / "agreement.example.yaml"
DEMO_KEYS = REPO / "deploy" / "keys"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """The umask most machines have: files 0644 and directories 0755 unless OIX says else."""
    before = os.umask(0o022)
    yield
    os.umask(before)


async def test_the_audit_store_its_wal_and_its_directories_are_the_owners_only(
    tmp_path: Path,
) -> None:
    data = tmp_path / "fresh" / "data"
    url = f"sqlite+aiosqlite:///{data / 'audit.db'}"
    await migrate(url)
    store = await AuditStore.open(url)
    try:
        await store.count()
        # While a connection is open, SQLite keeps its -wal and -shm files beside the database.
        companions = [data / "audit.db-wal", data / "audit.db-shm"]
        assert all(p.exists() for p in companions)
        modes = {p.name: _mode(p) for p in [data / "audit.db", *companions]}
    finally:
        await store.close()
    assert modes == {"audit.db": 0o600, "audit.db-wal": 0o600, "audit.db-shm": 0o600}
    assert (_mode(tmp_path / "fresh"), _mode(data)) == (0o700, 0o700)


async def test_the_liaison_store_its_wal_and_its_directories_are_the_owners_only(
    tmp_path: Path,
) -> None:
    data = tmp_path / "fresh" / "liaison"
    url = f"sqlite+aiosqlite:///{data / 'LV-VRS.db'}"
    await migrate_liaison(url)
    store = await LiaisonStore.open(url)
    try:
        companions = [data / "LV-VRS.db-wal", data / "LV-VRS.db-shm"]
        assert all(p.exists() for p in companions)
        modes = {p.name: _mode(p) for p in [data / "LV-VRS.db", *companions]}
    finally:
        await store.close()
    assert modes == {"LV-VRS.db": 0o600, "LV-VRS.db-wal": 0o600, "LV-VRS.db-shm": 0o600}
    assert (_mode(tmp_path / "fresh"), _mode(data)) == (0o700, 0o700)


def test_the_liaison_officers_and_webhooks_files_are_the_owners_only(tmp_path: Path) -> None:
    """Password hashes and webhook secrets: 0600 files in 0700 directories."""
    officers = tmp_path / "fresh" / "liaison" / "officers.yaml"
    webhooks = tmp_path / "fresh" / "hooks" / "webhooks.yaml"
    add_officer(officers, "LV-VRS", "duty", "a long enough password")
    secret = add_endpoint(
        webhooks, "LV-VRS", "ops", "https://ops.example/hook", owner=None, report_types=[]
    )
    assert secret in webhooks.read_text(encoding="utf-8")
    assert [o.name for o in read_officers(officers)] == ["duty"]
    assert (_mode(officers), _mode(webhooks)) == (0o600, 0o600)
    assert (_mode(officers.parent), _mode(webhooks.parent), _mode(tmp_path / "fresh")) == (
        0o700,
        0o700,
        0o700,
    )


def test_the_gateway_store_and_its_wal_are_the_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "gateway" / "LT-VSAT.sqlite3"
    store = Store.open(path)
    try:
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert (_mode(path), _mode(wal)) == (0o600, 0o600)
    finally:
        store.close()
    assert (_mode(tmp_path / "data"), _mode(path.parent)) == (0o700, 0o700)


def test_a_store_an_older_release_left_readable_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(b"")
    wal = tmp_path / "audit.db-wal"
    wal.write_bytes(b"")
    path.chmod(0o644)
    wal.chmod(0o640)
    private_sqlite(path)
    assert (_mode(path), _mode(wal)) == (0o600, 0o600)
    assert path.read_bytes() == b""


def _own_key_agreement(tmp_path: Path) -> Settings:
    """The example agreement with a fresh LT-VSAT key, kept in a keys dir of its own."""
    pair = generate_key_pair()
    agreement = yaml.safe_load(AGREEMENT.read_text(encoding="utf-8"))
    [key] = agreement["parties"]["LT-VSAT"]["keys"]
    key["public_key"] = pair.public_b64
    path = tmp_path / "agreement.yaml"
    path.write_text(yaml.safe_dump(agreement), encoding="utf-8")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{key['id']}.pem").write_bytes(pair.private_pem)
    return Settings(agreement=path, keys_dir=keys, schemas_dir=REPO / "schemas")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666], ids=oct)
def test_a_private_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    settings = _own_key_agreement(tmp_path)
    [path] = settings.keys_dir.glob("*.pem")
    path.chmod(mode)
    exchange = Exchange.from_settings(settings)
    with pytest.raises(SigningError) as refused:
        exchange.signer("LT-VSAT", datetime(2026, 6, 1, tzinfo=UTC))
    assert f"{path}: refusing a private key file others can use (mode 0{mode:o}:" in str(
        refused.value
    )
    assert f"chmod 600 {path}" in str(refused.value)
    path.chmod(0o600)
    assert exchange.signer("LT-VSAT", datetime(2026, 6, 1, tzinfo=UTC)).party == "LT-VSAT"


def test_a_demo_key_readable_by_others_is_used_with_a_loud_warning(tmp_path: Path) -> None:
    # git checks the demo keys out with the checkout's mode; they are published anyway.
    keys = tmp_path / "keys"
    keys.mkdir()
    for pem in DEMO_KEYS.glob("*.pem"):
        (keys / pem.name).write_bytes(pem.read_bytes())
        (keys / pem.name).chmod(0o644)
    code = (
        "from services.bus import Exchange, load_settings\n"
        "Exchange.from_settings(load_settings()).signer('LT-VSAT')\n"
        "Exchange.from_settings(load_settings()).signer('LT-VSAT')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OIX_KEYS_DIR": str(keys), "OIX_LOG_FORMAT": "json"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "DEMO key" in line]
    assert len(warnings) == 1, done.stderr  # once per file and process
    assert '"level":"warning"' in warnings[0]
    assert str(keys / "LT-VSAT-2026-1.pem") in warnings[0]
