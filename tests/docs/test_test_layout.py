"""pytest imports a test module outside a package by its bare file name (rootdir import
mode), so two such modules with one name stop the whole run at collection: it happened when
``tests/benchmarks`` and ``tests/compiler`` both got a ``test_arguments.py``. Keep them unique."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_outside_packages_have_unique_names() -> None:
    bare = [
        path
        for path in TESTS.rglob("*.py")
        if path.name.startswith("test_") or path.name.endswith("_test.py")
        if not (path.parent / "__init__.py").exists()
    ]
    assert len(bare) > 10, bare  # the scan finds them
    names = Counter(path.name for path in bare)
    clashes = sorted(str(path.relative_to(TESTS)) for path in bare if names[path.name] > 1)
    assert not clashes, f"test modules with one name outside packages: {clashes}"
