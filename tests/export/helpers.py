"""Shared helpers of the export tests: small builds of the shipped specs, importing generated
files, running Python with ``odedsl`` made unimportable, comparing modules."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from odedsl.export import render_files
from odedsl.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
CASES = Path(__file__).parent / "cases"
#: Small sizes for every shipped spec (each spec takes the ones it declares).
SMALL = {"depth": 3, "width": 8, "size": 8, "channels": 2, "d": 3}


def network_specs() -> list[Path]:
    """The shipped specs that define a network (``blocks.ode`` only defines blocks)."""
    has_network = re.compile(r"^\s*network\s", re.MULTILINE)
    return [p for p in sorted(SPECS.glob("*.ode")) if has_network.search(p.read_text())]


def small_params(path: Path) -> dict[str, int]:
    declared = load_spec(path).network.params
    return {k: v for k, v in SMALL.items() if k in declared}


def write(path: Path, out: Path, *, standalone: bool = False, **params: object) -> dict[str, Path]:
    """Render ``path`` into ``out``; file name → path."""
    out.mkdir(parents=True, exist_ok=True)
    files = render_files(load_spec(path, **params), standalone=standalone)  # type: ignore[arg-type]
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return {name: out / name for name in files}


def import_file(path: Path) -> ModuleType:
    """Import a generated file under a unique module name (no sys.path changes)."""
    name = f"_odedsl_export_test_{path.stem}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


BLOCK_ODEDSL = """\
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "odedsl" or name.startswith("odedsl."):
            raise ModuleNotFoundError(f"odedsl is blocked in this test: {name}")
        return None
sys.meta_path.insert(0, _Block())
sys.path[:] = [p for p in sys.path if p and p.rstrip("/") != %r]
"""


def run_python(
    args: list[str],
    *,
    cwd: Path,
    block_odedsl: bool = False,
    timeout: float = 240,
    path: list[Path] | None = None,
) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter; with ``block_odedsl`` a sitecustomize makes ``import odedsl`` fail;
    ``path``: folders on its ``PYTHONPATH`` (the caller's own is not passed on)."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    folders = [str(p) for p in path or []]
    if block_odedsl:
        site = cwd / "_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(BLOCK_ODEDSL % str(ROOT))
        folders.insert(0, str(site))
    if folders:
        env["PYTHONPATH"] = os.pathsep.join(folders)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def ruff() -> str | None:
    """The ruff of this environment, if the dev tools are installed."""
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.exists() else shutil.which("ruff")


def perturbed_state(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's state with every parameter moved off its initial value (zero-initialised
    residuals would make the stages identity maps and the comparisons trivial)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {
        k: (v + 0.2 * torch.randn(v.shape, generator=g, dtype=v.dtype) if k in params else v)
        .detach()
        .clone()
        for k, v in model.state_dict().items()
    }
