"""``oix gateway run`` beside a running ``oix up`` finds its broker; ``oix gateway example``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from services.gateway import create_token

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def test_gateway_run_uses_the_broker_of_the_running_oix_up(bootstrap: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "gateway").mkdir(parents=True, mode=0o700)
    create_token(data / "gateway" / "tokens.yaml", "LV-VRS", "lv-system")
    # What `oix up` writes once its broker runs; this test's process stands in for it.
    up = {"pid": os.getpid(), "bootstrap": bootstrap, "started_at": "2026-01-01T00:00:00+00:00"}
    (data / "up.json").write_text(json.dumps(up), encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if k != "OIX_BOOTSTRAP"},
        "OIX_DATA_DIR": str(data),
        "OIX_TOPIC_PREFIX": f"up{uuid.uuid4().hex[:10]}",
        "OIX_GATEWAY_AGENCY": "LV-VRS",
        "OIX_GATEWAY_PORT": "0",
        "OIX_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "gateway", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it listens, or exits
        assert line.startswith("gateway for LV-VRS at http://127.0.0.1:"), (
            line + process.communicate(timeout=30)[1]
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert f"using the broker of the oix up running as pid {os.getpid()}: {bootstrap}" in (
            stderr.replace("\n", " ")
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


async def test_oix_gateway_example_prints_a_report_the_gateway_accepts(
    client: httpx.AsyncClient,
) -> None:
    # The README's first curl posted deploy/examples as they are: dated 2025, which
    # the gateway now refuses (times more than a year ago).
    command = ["gateway", "example", "IncidentReport", "--agency", "LV-VRS"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *command,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "40"},  # a narrow terminal must not wrap the JSON
    )
    printed, _ = await process.communicate()
    assert process.returncode == 0
    answer = await client.post(
        "/v1/reports", content=printed, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 201, answer.text
