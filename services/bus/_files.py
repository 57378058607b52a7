"""Local files that hold reports, tokens or keys: readable by their owner only.

The audit's SQLite store holds decoded reports (personal data, possibly), the
gateway's its accepted reports, ``oix up`` its endpoints: data directories are
created 0700 and files 0600. Explicitly, file by file, rather than through the
process umask, which the files a user asks for (an export, an AsyncAPI
document) must keep. SQLite gives a database's ``-wal``, ``-shm`` and
``-journal`` files the mode of the database file, so making the database file
first, 0600, covers them. A file OIX finds looser than that (made by an older
release) is tightened, and the log says so; an existing directory is left as
it is (it may be a home or a shared mount), so a data directory made before
keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from services.bus._errors import ConfigError
from services.bus._logging import get_logger

log = get_logger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database."""


def private_dir(path: Path) -> Path:
    """Create ``path`` and each missing parent with mode 0700; returns ``path``.

    ``Path.mkdir(mode=…, parents=True)`` gives the parents the default mode:
    each missing level is made here instead. An existing directory is left as
    it is.
    """
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PRIVATE_DIR)
    return path


def _tighten(path: Path) -> None:
    """Take group's and others' access away from a file of ours that has any."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return
    loose = found.st_mode & 0o077
    if not loose or found.st_uid != os.geteuid():
        return
    os.chmod(path, found.st_mode & PRIVATE_FILE)  # noqa: PTH101  # keeps the owner's bits
    log.warning(
        "made a data file readable by its owner only",
        path=str(path),
        was=oct(found.st_mode & 0o777),
        now=oct(found.st_mode & PRIVATE_FILE),
    )


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists, mode 0600, in a directory made by :func:`private_dir`.

    An existing file keeps its content; a looser one of ours is tightened.
    """
    private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        _tighten(path)
    else:
        os.close(descriptor)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database file for :func:`private_file`, its ``-wal``/``-shm`` files tightened too.

    Call it before SQLite opens ``path``: an empty file is a valid empty
    database, and SQLite creates its companions with the database's mode.
    """
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        _tighten(path.with_name(path.name + suffix))
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically, mode 0600, in a private directory."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    temporary.replace(path)
    return path


def read_yaml_list(path: Path, key: str, what: str) -> list[Any]:
    """The ``key`` list of the YAML file ``path`` (the tokens, officers or webhooks files).

    A missing file holds none. ``what`` names the file in errors ("the token file").

    Raises:
        ConfigError: the file cannot be read, is not YAML, or has no ``key`` list.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        article = "an" if key[0] in "aeiou" else "a"
        raise ConfigError(f"{path}: expected a mapping with {article} '{key}' list")
    return items


def write_yaml_list(path: Path, key: str, items: list[dict[str, Any]], header: str) -> Path:
    """Replace ``path`` with ``header`` and the YAML mapping ``{key: items}``, privately."""
    body = yaml.safe_dump({key: items}, sort_keys=False)
    return write_private(path, (header + body).encode())
