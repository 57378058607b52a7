"""The shape of the code: layers that only point down, no import cycle, public names only.

Every module of ``services/`` (and its ``__init__.pyi`` stubs, whose imports run
lazily) and of ``bench/`` is parsed with :mod:`ast`; every import counts,
including those under ``if TYPE_CHECKING`` and inside functions: a cycle that
only the type checker or a late import sees is still a cycle in the design.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "services"

LAYERS: dict[str, int] = {
    "services.bus": 0,  # the core
    "services.host": 1,  # the hosting contract, oix up, the CLI helpers
    "services.audit": 2,  # the services: none imports another
    "services.gateway": 2,
    "services.liaison": 2,
    "services.demo": 3,  # tools built on the services (the demo publishes through the SDK)
    "services.replay": 3,  # auditors' replay and export, on the audit store and the bus
    "services.cli": 4,  # the command line, which registers the services
}
"""Each component of ``services/`` and its layer: a module imports only from lower layers."""

HEAVY = ("uvicorn", "fastapi", "starlette", "prometheus_client", "sqlalchemy", "alembic")
"""What ``oix --help`` must not import: web server, metrics library, database toolkit."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.importer} imports {self.imported}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, list[Path]]:
    """Every module of services/ with its files (a package's __init__.py and __init__.pyi)."""
    found: dict[str, list[Path]] = {}
    for path in sorted([*SERVICES.rglob("*.py"), *SERVICES.rglob("*.pyi")]):
        found.setdefault(_module_name(path), []).append(path)
    return found


MODULES = _modules()


def _imports_of(path: Path, name: str) -> list[Import]:
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(name, a.name, path, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
                target = f"{base}.{alias.name}"
                found.append(Import(name, target if target in MODULES else base, path, node.lineno))
    return [i for i in found if i.imported.split(".")[0] == "services"]


def _all_imports(paths: dict[str, list[Path]]) -> list[Import]:
    return [i for name, files in paths.items() for path in files for i in _imports_of(path, name)]


def _component(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_component_has_a_layer() -> None:
    components = {_component(m) for m in MODULES if m != "services"}
    assert components == set(LAYERS), "add a new package to LAYERS, at the layer it belongs to"


def test_imports_only_point_down() -> None:
    upward = []
    for found in _all_imports(MODULES):
        source, target = _component(found.importer), _component(found.imported)
        if source != target and LAYERS[target] >= LAYERS[source]:
            upward.append(str(found))
    assert upward == []


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle, as ``[a, b, …, a]``, or ``[]`` when there is none."""
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return []


def test_no_import_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for found in _all_imports(MODULES):
        edges.setdefault(found.importer, set()).add(found.imported)
    assert _cycle(edges) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert sorted(set(_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))) == ["a", "b", "c"]
    assert _cycle({"a": {"a"}}) == ["a", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_private_modules_are_imported_only_inside_their_package() -> None:
    bench = {f"bench.{p.stem}": [p] for p in sorted((REPO / "bench").glob("*.py"))}
    reaching_in = []
    for found in _all_imports({**MODULES, **bench}):
        parts = found.imported.split(".")
        private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
        if private is None:
            continue
        owner = ".".join(parts[:private])
        if found.importer != owner and not found.importer.startswith(f"{owner}."):
            reaching_in.append(str(found))
    assert reaching_in == []


def test_oix_help_imports_no_web_server_metrics_or_database_toolkit() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['oix', '--help']\n"
        "import services.cli\n"
        "try:\n"
        "    services.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert "Commands" in done.stdout
    loaded = {line.split(".")[0] for line in done.stderr.splitlines()}
    assert "services" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_no_two_test_modules_share_a_name() -> None:
    # Test folders are not packages: pytest imports each test module by its
    # basename, so a second test_x.py elsewhere would shadow the first.
    names = Counter(p.name for p in (REPO / "tests").rglob("*.py") if p.name != "conftest.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_every_late_import_says_why() -> None:
    # A late import (ruff's PLC0415) is for start-up speed or an optional
    # dependency only, and says which.
    silent = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted(SERVICES.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "noqa: PLC0415" in line and not line.split("noqa: PLC0415", 1)[1].strip(" ,#")
    ]
    assert silent == []


def test_no_test_module_imports_a_conftest() -> None:
    # Each test folder has its own conftest.py, all imported as `conftest`:
    # which one `from conftest import x` finds depends on what ran first.
    importing = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "tests").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom | ast.Import)
        and "conftest"
        in ([node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
    ]
    assert importing == []
