"""Property-based requests from the liaison API's own OpenAPI document: never a 500.

The liaison service and its agency's gateway run as processes of their own
(the real commands: ``oix gateway token create``, ``oix gateway run``,
``oix liaison officer add``, ``oix liaison run``), since schemathesis calls
them synchronously. Left out of the fuzzing: the live stream (it never
ends) and signing out (it would end the fuzzer's own session).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import SearchStrategy
from polling import eventually_sync
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.bus import free_port

REPO = Path(__file__).resolve().parents[2]
SKIPPED = {("GET", "/v1/stream"), ("DELETE", "/v1/session")}


def _ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/readyz").status_code == 200
        except httpx.TransportError:
            return False

    eventually_sync(
        answers, lambda: f"{url} to be ready:\n{log.read_text()}", timeout=60, interval=0.1
    )


@pytest.fixture(scope="module")
def liaison_process(
    bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("fuzzed-liaison")
    gateway_port, liaison_port = free_port(), free_port()
    env = {
        **os.environ,
        "OIX_BOOTSTRAP": bootstrap,
        "OIX_DATA_DIR": str(data),
        "OIX_TOPIC_PREFIX": f"fz{uuid.uuid4().hex[:10]}",
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
        "OIX_GATEWAY_AGENCY": "LV-VRS",
        "OIX_GATEWAY_PORT": str(gateway_port),
        "OIX_LIAISON_AGENCY": "LV-VRS",
        "OIX_LIAISON_PORT": str(liaison_port),
        "OIX_LIAISON_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
        "OIX_LIAISON_OPEN_PROCESSES": "0",
        "OIX_LIAISON_SESSION_TIMEOUT_MS": "2000",
        "OIX_LIAISON_HEARTBEAT_INTERVAL_MS": "500",
        "OIX_LIAISON_REBALANCE_TIMEOUT_MS": "2000",
        "COLUMNS": "200",
    }
    cli = [sys.executable, "-m", "services.cli"]

    def command(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*cli, *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            input=stdin,
        )
        return done.stdout.strip()

    env["OIX_LIAISON_GATEWAY_TOKEN"] = command(
        "gateway", "token", "create", "LV-VRS", "--name", "liaison"
    )
    password = command("liaison", "officer", "add", "fuzzer")
    log = (data / "services.log").open("wb")
    gateway = subprocess.Popen([*cli, "gateway", "run"], env=env, cwd=REPO, stdout=log, stderr=log)
    liaison = subprocess.Popen(
        [*cli, "liaison", "run", "--migrate"], env=env, cwd=REPO, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{liaison_port}"
    try:
        _ready(gateway, f"http://127.0.0.1:{gateway_port}", data / "services.log")
        _ready(liaison, url, data / "services.log")
        signed = httpx.post(f"{url}/v1/tokens", json={"name": "fuzzer", "password": password})
        assert signed.status_code == 201, signed.text
        yield url, signed.json()["token"]
        for process in (liaison, gateway):
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, (data / "services.log").read_text()
    finally:
        for process in (liaison, gateway):
            if process.poll() is None:
                process.kill()
                process.wait()
        log.close()


@pytest.fixture(scope="module")
def liaison_api(liaison_process: tuple[str, str]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{liaison_process[0]}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(
    liaison_api: schemathesis.BaseSchema, liaison_process: tuple[str, str], mode: GenerationMode
) -> None:
    token = liaison_process[1]
    operations = [result.ok() for result in liaison_api.get_all_operations()]
    fuzzed = [o for o in operations if (o.method.upper(), o.path) not in SKIPPED]
    assert len(operations) - len(fuzzed) == len(SKIPPED)
    for operation in fuzzed:
        takes_input = operation.method.upper() != "GET" or "{" in operation.path or operation.query
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue
        _fuzz(operation.as_strategy(generation_mode=mode), token)


def _fuzz(strategy: SearchStrategy[schemathesis.Case], token: str) -> None:
    @given(case=strategy)
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def every_operation(case: schemathesis.Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    every_operation()
