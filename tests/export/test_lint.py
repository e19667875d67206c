"""Generated files are valid, lint-clean Python: ``py_compile`` and ``ruff check`` with the
project's configuration (plain and standalone), ``ruff format`` for the plain files."""

from __future__ import annotations

import py_compile
import subprocess
from pathlib import Path

import pytest

from .helpers import CASES, ROOT, network_specs, ruff, small_params, write


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"plain": [], "standalone": []}
    tmp = tmp_path_factory.mktemp("lint")
    specs = [(s, small_params(s)) for s in network_specs()]
    specs += [(CASES / "kitchen.ode", {}), (CASES / "tiny.ode", {})]
    short = tmp / "ab.ode"  # class Ab: build()'s signature fits on one line
    short.write_text((CASES / "tiny.ode").read_text().replace("network tiny(", "network ab(", 1))
    specs.append((short, {}))
    for variant in out:
        for spec, params in specs:
            folder = tmp / variant / spec.stem
            files = write(spec, folder, standalone=variant == "standalone", **params)
            out[variant] += files.values()
    return out


def test_py_compile(generated: dict[str, list[Path]]) -> None:
    for path in generated["plain"] + generated["standalone"]:
        py_compile.compile(str(path), doraise=True)


@pytest.mark.parametrize("variant", ["plain", "standalone"])
def test_ruff_check_with_the_project_config(generated: dict[str, list[Path]], variant: str) -> None:
    tool = ruff()
    if tool is None:
        pytest.skip("ruff is not installed (the dev extra)")
    files = [str(p) for p in generated[variant]]
    config = ["--config", str(ROOT / "pyproject.toml")]
    for extra in (config, ["--isolated", "--select", "E,F", "--line-length", "100"]):
        proc = subprocess.run([tool, "check", *extra, *files], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-4000:]


def test_plain_files_are_ruff_formatted(generated: dict[str, list[Path]]) -> None:
    tool = ruff()
    if tool is None:
        pytest.skip("ruff is not installed (the dev extra)")
    files = [str(p) for p in generated["plain"]]
    config = ["--config", str(ROOT / "pyproject.toml")]
    command = [tool, "format", "--check", *config, *files]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
