"""The public surface of every package is pinned: sorted, complete, importable, documented."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

PACKAGES = [
    "services.audit",
    "services.bus",
    "services.bus.provisioning",
    "services.demo",
    "services.gateway",
    "services.host",
    "services.liaison",
    "services.replay",
]


def _ruff_order(name: str) -> tuple[int, str]:
    """The order ruff keeps ``__all__`` in (RUF022): constants, then classes, then the rest."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_complete(name: str) -> None:
    package = importlib.import_module(name)
    names = list(package.__all__)
    # Eager packages keep ruff's order; lazy ones list their stub's names in plain order.
    assert names in (sorted(names, key=_ruff_order), sorted(names))
    assert len(set(names)) == len(names)
    for exported in names:
        getattr(package, exported)  # every name loads, lazily or not
    public = {n for n, v in vars(package).items() if not isinstance(v, ModuleType)}
    assert set(names) == {n for n in public if not n.startswith("_")}


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_is_documented(name: str) -> None:
    package = importlib.import_module(name)
    undocumented = [
        exported
        for exported in package.__all__
        if callable(getattr(package, exported)) and not getattr(package, exported).__doc__
    ]
    assert undocumented == []


def test_the_service_packages_load_lazily() -> None:
    # Checked in a fresh interpreter: here the other tests have imported everything.
    import subprocess
    import sys

    probe = (
        "import sys, services.gateway, services.audit, services.demo\n"
        "print(sorted(m for m in sys.modules if m.startswith('services.') and '._' in m))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
