"""A network may not take the name of a module torch (or anything installed) imports: the
generated ``typing_extensions.py`` made ``import torch`` in ``train_typing_extensions.py`` a
circular import. Modules only in the current directory (an earlier build's files) are fine."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from odedsl.cli.main import main
from odedsl.export import context
from odedsl.export.context import PACKAGES, shadows

STAGE = "stage s = ode(2) { integrator euler residual { linear(4) } }"


def _spec(folder: Path, network: str) -> Path:
    path = folder / "shadow.ode"
    path.write_text(f"network {network}(p: int = 1) {{ input vector[4] {STAGE} }}")
    return path


def _refused(spec: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Build ``spec``, expect the E260 refusal, and return its message."""
    assert main(["build", str(spec), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "E260" in err and "would shadow" in err and "Traceback" not in err
    assert "installed package" in err and "e.g. to 'my_" in err
    assert not out.exists() or not list(out.iterdir())
    return err


@pytest.mark.parametrize(
    "network",
    ["typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "filelock", "PIL", "scipy"],
)
def test_torch_dependencies_and_scientific_packages_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], network: str
) -> None:
    _refused(_spec(tmp_path, network), tmp_path / "out", capsys)


@pytest.mark.parametrize("network", ["triton", "nvidia", "pkg_resources", "yaml", "pandas"])
def test_known_packages_are_refused_even_where_not_installed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    network: str,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    assert network in PACKAGES
    _refused(_spec(tmp_path, network), tmp_path / "out", capsys)


def test_any_installed_top_level_module_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "odedsl_shadow_probe").mkdir(parents=True)
    (site / "odedsl_shadow_probe" / "__init__.py").write_text("")
    (site / "train_odedsl_probe.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _refused(_spec(work, "odedsl_shadow_probe"), work / "out", capsys)
    _refused(_spec(work, "odedsl_probe"), work / "out", capsys)  # train_odedsl_probe.py


def test_a_module_in_the_current_directory_does_not_block_a_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m odedsl.cli.main build x.ode -o .`` twice: the first build's ``net.py`` is
    importable from the current directory, and must not refuse the second."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec(tmp_path, "odedsl_rebuilt")
    assert main(["build", str(spec), "-o", str(tmp_path)]) == 0
    assert importlib.util.find_spec("odedsl_rebuilt") is not None
    assert main(["build", str(spec), "-o", str(tmp_path)]) == 0


def test_a_failing_lookup_is_not_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str, package: str | None = None) -> None:
        raise ValueError(f"{name}.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert not shadows("odedsl_not_a_module")
    assert shadows("os") and shadows("sympy")


def test_ordinary_names_are_not_shadowing() -> None:
    assert not any(shadows(n) for n in ("n", "net", "resnet", "revnet", "my_sympy"))
    assert context.SHADOWED >= {"torch", "numpy", "typing_extensions", "os"}


def test_a_rebuild_into_a_folder_on_the_path_is_not_its_own_shadow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-o build/`` with ``build/`` on PYTHONPATH so scripts import the model: the second
    build found the first's files and refused (review). Files ``odedsl build`` wrote start
    with its header and are not modules torch imports; another file of that name is."""
    from odedsl.export.render import HEADER

    assert HEADER.encode().startswith(context.GENERATED)
    out, work = tmp_path / "build", tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(out))
    spec = _spec(work, "odedsl_on_path")
    assert main(["build", str(spec), "-o", str(out)]) == 0
    importlib.invalidate_caches()
    assert importlib.util.find_spec("odedsl_on_path") is not None
    assert main(["build", str(spec), "-o", str(out), "--force"]) == 0
    (out / "odedsl_on_path.py").write_text("x = 1\n")  # a module that is not our output
    assert shadows("odedsl_on_path")
