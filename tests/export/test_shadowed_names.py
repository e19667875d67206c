"""A network may not take the name of a module torch (or anything installed) imports: the
generated ``typing_extensions.py`` made ``import torch`` in ``train_typing_extensions.py`` a
circular import. Modules only in the current directory (an earlier build's files) are fine."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from odedsl.cli.main import main
from odedsl.export import context
from odedsl.export.context import PACKAGES, shadows

from .helpers import import_file

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


def _bound(tree: ast.Module) -> list[str]:
    """The names a module binds at its top level (imports, definitions, assignments)."""
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names += [a.asname or a.name.partition(".")[0] for a in node.names]
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def test_a_network_named_like_a_training_script_name_does_not_rebind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Networks ``f`` and ``path`` gave classes ``F`` and ``Path``, imported by name into
    the training script over ``torch.nn.functional as F`` and ``pathlib.Path``: its first
    loss (``F.cross_entropy``) or its ``--out`` default failed. Every class-like name the
    script binds, as a network's class, must leave the script's names bound once."""
    assert main(["build", str(_spec(tmp_path, "probe")), "-o", str(tmp_path / "probe")]) == 0
    script = ast.parse((tmp_path / "probe" / "train_probe.py").read_text())
    classlike = sorted(
        {n for n in _bound(script) if (n[:1].isupper() and not n.isupper()) or n == "F"}
    )
    assert {"F", "Path", "DataLoader", "Tensor"} <= set(classlike)
    built = []
    for name in classlike:
        network = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
        out = tmp_path / network
        if main(["build", str(_spec(tmp_path, network)), "-o", str(out)]) != 0:
            continue  # a name of the network file itself: refused there (E260)
        train = ast.parse((out / f"train_{network}.py").read_text())
        bound = _bound(train)
        assert sorted(n for n in set(bound) if bound.count(n) > 1) == [], network
        built.append(network)
    capsys.readouterr()
    assert {"f", "path", "data_loader"} <= set(built)
    for network in ("f", "path"):  # and the scripts run
        monkeypatch.syspath_prepend(str(tmp_path / network))
        monkeypatch.delitem(sys.modules, network, raising=False)
        script_module = import_file(tmp_path / network / f"train_{network}.py")
        args = ["--epochs", "1", "--samples", "4", "--batch-size", "2", "--log-every", "0"]
        assert script_module.main([*args, "--out", str(tmp_path / f"run_{network}")]) == 0
        sys.modules.pop(network, None)
    assert capsys.readouterr().out.count("epoch 0: loss") == 2
