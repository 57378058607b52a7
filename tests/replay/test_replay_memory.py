"""200,000 messages replay within a fixed memory bound: the replay streams, never holds history."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
from replay_support import OIX, REPO, env_of, produce, sealed

from services.bus import Exchange, Settings

COUNT = 200_000
PEAK_RSS_BOUND_MB = 350
"""Generous: the process starts near 120 MB; holding the history would take several times this."""

_MEASURE = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:], check=False); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
    "sys.exit(done.returncode)"
)
"""Runs the command as its only child and prints that child's peak RSS in MB."""


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_hundred_thousand_messages_replay_in_bounded_memory(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    some = sealed(exchange, "LT-VSAT", 20)
    started = time.monotonic()
    await produce(settings, topic, some * (COUNT // len(some)))
    produced = time.monotonic()
    out = tmp_path / "history.avro"
    command = [*OIX, "replay", "export", "--topic", topic, "--format", "avro", "--out", str(out)]
    done = run_measured([*command, "--no-checks"], env_of(settings))
    took = f"produce {produced - started:.1f} s, replay {time.monotonic() - produced:.1f} s"
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.strip().splitlines()[-1])
    with out.open("rb") as stream:
        count = sum(1 for _ in fastavro.reader(stream))
    assert count == COUNT
    size_mb = out.stat().st_size // 2**20
    assert peak_mb < PEAK_RSS_BOUND_MB, f"peak RSS {peak_mb} MB ({size_mb} MB of Avro; {took})"


def run_measured(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
        cwd=REPO,
        check=False,
    )
