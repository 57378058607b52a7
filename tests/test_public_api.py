"""The public surface of services.bus is pinned: sorted, complete, importable."""

from __future__ import annotations

import services.bus


def test_all_is_sorted_and_complete() -> None:
    names = services.bus.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    public = {n for n in dir(services.bus) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(services.bus, n)).__name__ == "module"}
    assert set(names) == public - modules


def test_every_public_name_is_documented() -> None:
    undocumented = [
        name
        for name in services.bus.__all__
        if callable(getattr(services.bus, name)) and not getattr(services.bus, name).__doc__
    ]
    assert undocumented == []
