"""The `oix` command line as a user runs it: real processes, one clear line on errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka_support import read_topics

from services.bus import Exchange, Signer, free_port, load_examples

REPO = Path(__file__).resolve().parents[1]
OIX = [sys.executable, "-m", "services.cli"]


def oix(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OIX, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OIX_LOG_FORMAT": "json", **(env or {})},
        cwd=REPO,
        check=False,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_help_lists_the_commands() -> None:
    done = oix("--help")
    assert done.returncode == 0
    for command in ("up", "demo", "broker", "schemas", "keys", "agreement"):
        assert command in done.stdout


def test_broker_on_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_error_line(oix("broker", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_broker_with_a_missing_binary_is_one_clear_line(tmp_path: Path) -> None:
    line = _one_error_line(
        oix("broker", "--port", "0", env={"OIX_TANSU_BIN": str(tmp_path / "tansu")})
    )
    assert "is not an executable file" in line


def test_broker_that_does_not_come_up_is_one_clear_line(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'tansu: storage engine unavailable' >&2\nexit 3\n")
    fake.chmod(0o755)
    line = _one_error_line(oix("broker", "--port", "0", env={"OIX_TANSU_BIN": str(fake)}))
    assert "tansu exited with code 3 at start: tansu: storage engine unavailable" in line


def test_broker_runs_until_sigterm_and_stops_cleanly() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*OIX, "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "OIX_LOG_FORMAT": "json"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"broker ready at kafka://127.0.0.1:{port}" in first
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # the port is free again: the broker is gone


def test_bad_settings_name_the_variable_and_the_reason() -> None:
    done = oix("demo", env={"OIX_BOOTSTRAP": "kafka-without-port", "OIX_LOG_LEVEL": "LOUD"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: invalid settings:" in done.stderr
    assert "OIX_BOOTSTRAP: Value error, 'kafka-without-port' is not host:port" in done.stderr
    assert "OIX_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in done.stderr


def test_schemas_check_passes_on_the_repository() -> None:
    done = oix("schemas", "check")
    assert done.returncode == 0, done.stderr
    assert "ok: 10 report types compatible with 11 released versions" in done.stdout


def test_schemas_check_refuses_a_breaking_change(tmp_path: Path) -> None:
    import json
    import shutil

    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    path = schemas / "reports" / "Acknowledgement.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "received_by", "type": "string"})
    path.write_text(json.dumps(schema))
    done = oix("schemas", "check", "--schemas-dir", str(schemas))
    assert done.returncode == 1
    assert (
        "Acknowledgement.received_by: a field was added (or removed) without a default"
        in done.stderr
    )


def test_keys_generate_writes_a_usable_key(tmp_path: Path) -> None:
    done = oix(
        "keys", "generate", "LT-VSAT", "--key-id", "LT-VSAT-test-1", "--out-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "LT-VSAT-test-1.pem"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    public = done.stdout.split("public_key:")[1].split()[0]
    import base64

    signer = Signer.from_pem_file("LT-VSAT", "LT-VSAT-test-1", path)
    assert base64.b64encode(signer.public_key).decode() == public
    again = oix(
        "keys", "generate", "LT-VSAT", "--key-id", "LT-VSAT-test-1", "--out-dir", str(tmp_path)
    )
    assert "refusing to overwrite" in _one_error_line(again)


def test_keys_generate_writes_into_oix_keys_dir_by_default(tmp_path: Path) -> None:
    # It wrote to ./keys, which git did not ignore: a private key could be committed.
    keys = tmp_path / "made" / "keys"
    done = oix(
        "keys", "generate", "LT-VSAT", "--key-id", "LT-VSAT-test-2", env={"OIX_KEYS_DIR": str(keys)}
    )
    assert done.returncode == 0, done.stderr
    path = keys / "LT-VSAT-test-2.pem"
    assert f"private key written to {path}" in done.stdout
    assert (path.stat().st_mode & 0o777, keys.stat().st_mode & 0o777) == (0o600, 0o700)
    assert not (REPO / "keys" / "LT-VSAT-test-2.pem").exists()
    again = oix(
        "keys", "generate", "LT-VSAT", "--key-id", "LT-VSAT-test-2", env={"OIX_KEYS_DIR": str(keys)}
    )
    assert "refusing to overwrite" in _one_error_line(again)


def test_git_ignores_private_keys_but_not_the_demo_keys() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    candidates = ["keys/LT-VSAT-2026-1.pem", "deploy/keys/LT-VSAT-2026-2.pem"]
    demo = [f"deploy/keys/{p.name}" for p in (REPO / "deploy" / "keys").glob("*-2026-1.pem")]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *candidates, *demo],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=30,
    )
    assert sorted(done.stdout.split()) == sorted(candidates), done.stderr


def test_agreement_check_reports_the_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "agreement.yaml"
    broken.write_text(
        (REPO / "deploy" / "agreement.example.yaml")
        .read_text()
        .replace("to: [LV-VRS, PL-SG", "to: [LV-VRZ, PL-SG", 1)
    )
    line = _one_error_line(oix("agreement", "check", str(broken)))
    assert "releases.0.to: unknown party 'LV-VRZ'" in line


def test_agreement_acls_prints_kafka_acls_commands() -> None:
    done = oix("agreement", "acls")
    assert done.returncode == 0, done.stderr
    assert "--allow-principal User:lt-vsat --operation WRITE --topic oix.LT-VSAT." in done.stdout


async def test_demo_publishes_every_example(
    bootstrap: str, topic_prefix: str, exchange: Exchange
) -> None:
    env = {"OIX_BOOTSTRAP": bootstrap, "OIX_TOPIC_PREFIX": topic_prefix}
    done = await asyncio.to_thread(oix, "demo", "--rounds", "1", "--interval", "0", env=env)
    assert done.returncode == 0, done.stderr
    count = len(load_examples())
    assert f"published {count} reports" in done.stdout
    topics = {
        topic.strip()
        for line in done.stdout.splitlines()
        if "-> " in line
        for topic in line.split("-> ")[1].split(" [")[0].split(",")
    }
    assert all(t.startswith(f"{topic_prefix}.") for t in topics)
    landed = await read_topics(bootstrap, sorted(topics), expected=count)
    assert len(landed) == count
    assert all(exchange.opener.open(r.value, r.headers).trusted for r in landed)


def _up_env(tmp_path: Path, **ports: str) -> dict[str, str]:
    """``oix up`` on free ports (0), not the defaults a `make up` beside the tests holds."""
    return {
        **{k: v for k, v in os.environ.items() if k != "OIX_BOOTSTRAP"},
        "OIX_LOG_FORMAT": "json",
        "OIX_DATA_DIR": str(tmp_path / "data"),
        "OIX_GATEWAY_PORT": "0",
        "OIX_AUDIT_METRICS_PORT": "0",
        **ports,
    }


def _beside(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An ``oix`` command run beside ``oix up``: same directory and data, no OIX_BOOTSTRAP."""
    return subprocess.run(
        [*OIX, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=_up_env(tmp_path),
        check=False,
    )


def test_up_starts_prints_endpoints_is_found_by_other_commands_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        [*OIX, "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_up_env(tmp_path),
    )
    lines: list[str] = []
    data = tmp_path / "data"
    state = data / "up.json"
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready"):
                break
        assert any(line.startswith("broker     kafka://127.0.0.1:") for line in lines), lines
        assert any(line.startswith("ready") for line in lines), lines
        bootstrap = next(line for line in lines if line.startswith("broker")).split("//")[1]
        bootstrap = bootstrap.split()[0]

        # Issue 8: after `make up`, `oix demo` and `oix audit verify` said "no broker"
        # unless OIX_BOOTSTRAP was set to the port `make up` had printed.
        running = json.loads(state.read_text(encoding="utf-8"))
        assert (running["pid"], running["bootstrap"]) == (process.pid, bootstrap)
        assert any(e.endswith("/docs") for e in running["endpoints"]["gateway"]), running
        assert "oixgw_" not in state.read_text(encoding="utf-8")  # the example tokens are not
        assert (_mode(data), _mode(state), _mode(data / "audit.db")) == (0o700, 0o600, 0o600)
        found = f"using the broker of the oix up running as pid {process.pid}: {bootstrap}"
        demo = _beside(tmp_path, "demo", "--rounds", "1", "--interval", "0")
        assert demo.returncode == 0, demo.stderr
        assert found in demo.stderr
        verify = _beside(tmp_path, "audit", "verify", "--no-signatures")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert found in verify.stderr
        assert "compared with the broker" in verify.stdout
        second = _beside(tmp_path, "up")
        assert f"another oix up (pid {process.pid}) runs with OIX_DATA_DIR=" in _one_error_line(
            second
        )

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not state.exists()  # a clean stop removes it

    # What a killed `oix up` leaves is stale: its pid is gone.
    state.write_text(json.dumps({"pid": process.pid, "bootstrap": bootstrap}), encoding="utf-8")
    demo = _beside(tmp_path, "demo")
    assert f"the oix up that wrote it (pid {process.pid}) is gone" in demo.stderr
    assert "no broker: set OIX_BOOTSTRAP" in _one_error_line(demo)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("variable", ["OIX_GATEWAY_PORT", "OIX_AUDIT_METRICS_PORT"])
def test_up_on_a_busy_port_says_which_variable_to_set(tmp_path: Path, variable: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*OIX, "up"],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
            env=_up_env(tmp_path, **{variable: str(port)}),
            check=False,
        )
    line = _one_error_line(done)
    assert f"{variable}: cannot listen on 127.0.0.1:{port}" in line, line
    assert f"or {variable}=0 for any free port" in line or "or 0 for any free port" in line
    assert done.stdout.rstrip().endswith("stopped"), done.stdout
