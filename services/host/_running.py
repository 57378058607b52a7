"""Where a running ``oix up`` can be reached, for the other commands run beside it.

``oix up`` starts its broker on a free port; ``oix demo`` and ``oix audit
verify`` in another terminal must not need that port typed in. So ``oix up``
writes ``<OIX_DATA_DIR>/up.json`` (mode 0600 in a 0700 directory): its pid, the
broker's bootstrap servers, and each service's endpoint lines that name a URL
(the example tokens it prints are not written). A clean stop removes it. A
command that needs a broker and has no ``OIX_BOOTSTRAP`` uses the one the file
names, and says so, if that ``oix up`` still runs: its pid is alive and its
broker accepts a connection; a file a killed ``oix up`` left is stale and
ignored. ``OIX_BOOTSTRAP`` (or ``--bootstrap``) always wins.

One ``oix up`` per data directory: the audit store and the gateways' files
there are not to be shared with a second one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from services.bus import ConfigError, Settings, write_private

UP_FILE = "up.json"
_PROBE_TIMEOUT_S = 1.0


def up_file(settings: Settings) -> Path:
    """Where ``oix up`` with these settings says where it can be reached."""
    return settings.data_dir / UP_FILE


@dataclass
class RunningUp:
    """What ``up.json`` says about a running ``oix up``."""

    pid: int
    bootstrap: str
    started_at: str
    endpoints: dict[str, list[str]] = field(default_factory=dict)
    """Per service, its endpoint lines that name a URL."""

    def to_json(self) -> bytes:
        """The file's content."""
        return (json.dumps(asdict(self), indent=2) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Found:
    """What looking for a running ``oix up`` found: it, or why the file there is not used."""

    running: RunningUp | None
    path: Path
    stale: str | None = None
    """Why a file that exists names no running ``oix up``."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def _read(path: Path) -> RunningUp:
    data = json.loads(path.read_text(encoding="utf-8"))
    return RunningUp(
        pid=int(data["pid"]),
        bootstrap=str(data["bootstrap"]),
        started_at=str(data.get("started_at", "")),
        endpoints={str(k): list(v) for k, v in dict(data.get("endpoints", {})).items()},
    )


def find_running_up(settings: Settings) -> Found:
    """The ``oix up`` running with these settings' data directory, if one is."""
    path = up_file(settings)
    try:
        running = _read(path)
    except FileNotFoundError:
        return Found(None, path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Found(None, path, f"unreadable ({exc})")
    if not _alive(running.pid):
        return Found(None, path, f"the oix up that wrote it (pid {running.pid}) is gone")
    if not _answers(running.bootstrap):
        return Found(None, path, f"its broker at {running.bootstrap} does not answer")
    return Found(running, path)


class UpRegistration:
    """``oix up``'s own ``up.json``: written once the broker runs, updated, removed at the end."""

    def __init__(self, settings: Settings) -> None:
        self.path = up_file(settings)
        self._settings = settings
        self._running: RunningUp | None = None

    def claim(self) -> None:
        """Make sure no other ``oix up`` uses this data directory.

        Raises:
            ConfigError: another one runs; naming its pid and what to do.
        """
        found = find_running_up(self._settings)
        if found.running is not None and found.running.pid != os.getpid():
            raise ConfigError(
                f"another oix up (pid {found.running.pid}) runs with OIX_DATA_DIR="
                f"{self._settings.data_dir}: stop it, or give this one another OIX_DATA_DIR",
            )

    def write(self, bootstrap: str) -> None:
        """Say where this ``oix up``'s broker is."""
        self._running = RunningUp(os.getpid(), bootstrap, datetime.now(UTC).isoformat())
        write_private(self.path, self._running.to_json())

    def ready(self, name: str, endpoints: list[str]) -> None:
        """Add a service's endpoint lines that name a URL (never a token line)."""
        if self._running is None:
            return
        self._running.endpoints[name] = [line for line in endpoints if "://" in line]
        write_private(self.path, self._running.to_json())

    def remove(self) -> None:
        """Remove the file, if it is still this process's."""
        if self._running is None:
            return
        self._running = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if _read(self.path).pid == os.getpid():
                self.path.unlink()
