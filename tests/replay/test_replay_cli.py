"""`oix replay` as a real process: exports, evidence checks, compare, refusals, Ctrl-C."""

from __future__ import annotations

import getpass
import json
import re
import signal
import subprocess
from pathlib import Path

import fastavro
import pytest
from polling import eventually, eventually_sync
from replay_support import OIX, REPO, audit_running, env_of, produce, sealed

from services.bus import Exchange, Settings
from services.replay import ReadStats
from services.replay._progress import _reach_text

pytestmark = pytest.mark.timeout(180)


def oix(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OIX, *args], capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


async def test_export_check_and_compare_commands(
    settings: Settings, exchange: Exchange, sqlite_url: str, tmp_path: Path
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 5))
    async with audit_running(settings, exchange, sqlite_url) as consumer:
        await eventually(lambda: consumer.stored >= 5, "5 records stored", timeout=60)
    env = env_of(settings, sqlite_url)
    out = tmp_path / "h.jsonl"
    done = oix(env, "replay", "export", "--topic", topic, "--format", "jsonl", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 5
    assert "5 record(s) from kafka" in done.stderr
    table = oix(
        env, "replay", "export", "--party", "LT-VSAT", "--source", "store", "--format", "table"
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("IncidentReport") == 5

    bundle = tmp_path / "bundle"
    no_broker = {**env, "OIX_BOOTSTRAP": ""}  # a bundle comes from the store alone
    done = oix(no_broker, "replay", "export", "--topic", topic, "--evidence", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "5 record(s)" in done.stdout
    done = oix(env, "replay", "check-evidence", str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean" in done.stdout
    (bundle / "agreement.yaml").write_text("changed\n")
    done = oix(env, "replay", "check-evidence", str(bundle))
    assert done.returncode == 1
    assert "FINDING agreement.yaml" in done.stdout
    done = oix(env, "replay", "check-evidence", str(tmp_path))
    assert done.returncode == 2
    assert "manifest.json" in one_error_line(done)

    done = oix(env, "replay", "compare", "--topic", topic)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 difference(s)" in done.stdout
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 1), first_ms=1_790_000_000_000)
    done = oix(env, "replay", "compare", "--topic", topic)
    assert done.returncode == 1
    assert f"DIFFERENCE {topic}[0] offset 5: in Kafka, not in the store" in done.stdout


async def test_refusals_are_one_clear_line(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    env = env_of(settings)
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    done = oix(env, "replay", "export", "--topic", topic, "--to-topic", topic)
    assert done.returncode == 2
    assert "live OIX feed topic" in one_error_line(done)
    done = oix(env, "replay", "export", "--party", "XX-NOBODY")
    assert "XX-NOBODY is not a party" in one_error_line(done)
    done = oix(env, "replay", "export", "--from-offset", "9", "--to-offset", "3")
    assert "--to-offset" in one_error_line(done)
    done = oix(env, "replay", "export", "--format", "avro")
    assert "--out" in one_error_line(done)
    done = oix(env, "replay", "export", "--evidence", "b", "--to-topic", "x")
    assert "--to-topic" in one_error_line(done)
    missing = tmp_path / "none" / "audit.db"
    store = {**env, "OIX_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{missing}"}
    done = oix(store, "replay", "export", "--source", "store")
    assert f"there is no audit store at {missing}" in one_error_line(done)
    assert not missing.parent.exists()  # a reader creates nothing


def interrupt(command: list[str], env: dict[str, str], out: Path) -> tuple[int, str]:
    """Run ``command``, Ctrl-C it once ``out`` has grown, and give its exit code and stderr."""
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        eventually_sync(
            lambda: out.exists() and out.stat().st_size > 200_000,
            "the export to have written 200 kB",
            timeout=90,
        )
        assert process.poll() is None, "the export ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


@pytest.mark.parametrize("kind", ["avro", "jsonl"])
async def test_ctrl_c_leaves_the_output_complete_and_valid(
    settings: Settings, exchange: Exchange, tmp_path: Path, kind: str
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    some = sealed(exchange, "LT-VSAT", 10)
    await produce(settings, topic, some * 3000)  # 30,000 records: long enough to interrupt
    out = tmp_path / f"history.{kind}"
    args = ["replay", "export", "--topic", topic, "--format", kind, "--out", str(out)]
    returncode, stderr = interrupt([*OIX, *args, "--progress"], env_of(settings), out)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    assert "records" in stderr  # the progress line (count and rate)
    # and how far through the range (the broker's end offsets told its size)
    assert re.search(r"read\s+[\d,]+\s+of\s+~[\d,]+", stderr), stderr
    if kind == "avro":
        with out.open("rb") as stream:
            records = list(fastavro.reader(stream))
        offsets = [r["offset"] for r in records]  # type: ignore[call-overload,index]
    else:
        offsets = [json.loads(line)["offset"] for line in out.read_text().splitlines()]
    assert 0 < len(offsets) < 30_000
    assert offsets == list(range(len(offsets)))


async def test_replay_to_topic_redrives_as_the_issue_words_it(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    """`oix replay --to-topic T [filters]` (and `oix replay export --to-topic T`) re-drive;
    options before a command, or neither, are one clear error line."""
    source = exchange.naming.feed("LT-VSAT", "incidents")
    reports = sealed(exchange, "LT-VSAT", 4)
    await produce(settings, source, reports)
    env = env_of(settings)
    target = f"recovery-{settings.topic_prefix}"
    done = oix(
        env, "replay", "--to-topic", target, "--topic", source, "--from-offset", "1",
        "--operator", "auditor-2", "--processes", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"re-drove 3 record(s) to {target}" in done.stdout
    done = oix(env, "replay", "export", "--to-topic", target, "--topic", source, "--to-offset", "0")
    assert done.returncode == 0, done.stderr
    assert f"re-drove 1 record(s) to {target}" in done.stdout
    out = tmp_path / "copies.avro"
    done = oix(
        env, "replay", "export", "--topic", target, "--raw", "--format", "avro", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    with out.open("rb") as stream:
        copies = [r for r in fastavro.reader(stream) if isinstance(r, dict)]
    by_offset = {
        int({h["name"]: h["value"] for h in c["headers"]}["oix-replay-source-offset"]): c
        for c in copies
    }
    assert sorted(by_offset) == [0, 1, 2, 3]
    for offset, original in enumerate(reports):
        copy = by_offset[offset]
        assert copy["value"] == original.value
        assert [(h["name"], h["value"]) for h in copy["headers"]][: len(original.headers)] == list(
            original.headers
        )
        operator = {h["name"]: h["value"] for h in copy["headers"]}["oix-replay-operator"]
        assert operator == (getpass.getuser().encode() if offset == 0 else b"auditor-2")
        assert copy["report"] is None  # --raw: not decoded
    done = oix(env, "replay", "--to-topic", source, "--topic", source)
    assert "live OIX feed topic" in one_error_line(done)
    done = oix(env, "replay", "--topic", source)
    assert "--to-topic" in one_error_line(done)
    done = oix(env, "replay", "--topic", source, "export")
    assert "after the command" in one_error_line(done)
    done = oix(env, "replay", "export", "--topic", source, "--raw", "--mode", "TEST")
    assert "--raw" in one_error_line(done)


def test_the_progress_line_says_how_far_through_the_range_once_known() -> None:
    assert _reach_text(None) == ""
    assert _reach_text(ReadStats(read=5)) == ""  # the size is not known (yet)
    assert _reach_text(ReadStats(read=2500, span=10_000)) == "read 2,500 of ~10,000 (25 %)"
    # The local broker's end offsets are low: never past 100 %.
    assert _reach_text(ReadStats(read=10_400, span=10_000)) == "read 10,400 of ~10,000 (100 %)"
