"""The replay's opening workers (forked from a forkserver) and spawned ones alike: they open
what the process itself opens, and go when their parent is killed outright."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import eventually
from replay_support import REPO, sealed

from services.bus import Exchange, OpenerPool, Settings
from services.replay._opening import open_record, opening_for, worker_preload

pytestmark = pytest.mark.timeout(120)

HOLDER = """
import asyncio, sys
from pathlib import Path
from services.bus import Exchange, OpenerPool, Settings
from services.replay._opening import opening_for, worker_preload

repo, data, forkserver = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
settings = Settings(
    bootstrap="127.0.0.1:9", topic_prefix="t", data_dir=data,
    agreement=repo / "deploy" / "agreement.example.yaml", keys_dir=repo / "deploy" / "keys",
    schemas_dir=repo / "schemas", log_format="json", log_level="ERROR",
)

async def main() -> None:
    opener = Exchange.from_settings(settings).opener
    pool = OpenerPool(settings, opening_for(checks=True, reports=False), 2, opener,
                      forkserver=forkserver, preload=worker_preload() if forkserver else ())
    await pool.start()
    print(*(p.pid for p in pool._executor._processes.values()), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("forkserver", [True, False], ids=["forkserver", "spawn"])
async def test_workers_go_when_their_parent_is_killed(forkserver: bool, tmp_path: Path) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220  # a process to kill, not to wait for
        [sys.executable, "-c", HOLDER, str(REPO), str(tmp_path), "1" if forkserver else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, holder.stderr.read() if holder.stderr else line
        assert all(running(pid) for pid in pids)
        holder.send_signal(signal.SIGKILL)
        await eventually(
            lambda: not any(running(pid) for pid in pids), "the workers to go", timeout=30
        )
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.parametrize("forkserver", [True, False], ids=["forkserver", "spawn"])
async def test_workers_open_what_this_process_opens(
    forkserver: bool, settings: Settings, exchange: Exchange
) -> None:
    values = [(s.value, tuple(s.headers)) for s in sealed(exchange, "LT-VSAT", 200)]
    values.append((b"\xc3\x01broken", ()))
    open_one = opening_for(checks=True, reports=False)
    preload = worker_preload() if forkserver else ()
    pool = OpenerPool(
        settings, open_one, 2, exchange.opener, forkserver=forkserver, preload=preload
    )
    try:
        await pool.start()
        found = await pool.open(values)
    finally:
        pool.close()
    here = [
        open_record(exchange.opener, value, headers, checks=True, reports=False)
        for value, headers in values
    ]
    assert found == here
    assert {o.signature_status for o in found[:-1]} == {"valid"}
    assert found[-1].decode_error is not None
