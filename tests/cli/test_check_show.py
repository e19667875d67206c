"""`odedsl check` and `odedsl show`: exit codes, JSON shape, located errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from odedsl.cli.main import main

ROOT = Path(__file__).parents[2]
RESNET = str(ROOT / "specs" / "resnet.ode")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "odedsl.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_check_ok_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", RESNET]) == 0
    assert "ok: network 'resnet'" in capsys.readouterr().out
    assert main(["check", RESNET, "--json", "--set", "depth=8"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["errors"] == []
    net = data["network"]
    assert net["name"] == "resnet" and net["input_shape"] == [3, 32, 32]
    (stage,) = net["stages"]
    assert set(stage) == {
        "name",
        "integrator",
        "depth",
        "step",
        "weights",
        "backward",
        "inverse",
        "inverse_fault",
        "parameters",
        "shape",
    }
    assert stage["depth"] == 8 and stage["inverse"] == "approximate"
    assert stage["inverse_fault"] is None
    assert stage["step"] == pytest.approx(1 / 8)


def test_check_errors_are_located_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "blocks.ode").write_text((ROOT / "specs" / "blocks.ode").read_text())
    bad = tmp_path / "bad.ode"
    bad.write_text(Path(RESNET).read_text().replace("batchnorm2d\n", "batchnorm\n", 1))
    assert main(["check", str(bad), "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    (error,) = data["errors"]
    assert {"file", "line", "column", "message", "hint"} <= set(error)
    assert error["line"] == 13 and error["column"] == 9  # the stem's batchnorm
    assert error["hint"] == "did you mean 'batchnorm1d'?" or "batchnorm2d" in error["hint"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "no/such/file.ode"], "no such file"),
        (["check", str(ROOT / "specs")], "'" + str(ROOT / "specs") + "': a directory"),
        (["check", "/dev/null"], "'/dev/null': not a regular file"),
        (["check", RESNET, "--set", "depth"], "expected NAME=VALUE"),
        (["check", RESNET, "--set", "dpth=3"], "did you mean 'depth'"),
        (["check", RESNET, "--set", "depth=many"], "parameter 'depth' is int"),
        (["show", RESNET, "--set", "depth=0"], "depth must be at least 1"),
        (["check", RESNET, "--network", "nope"], "resnet.ode:7:1: error: no network named 'nope'"),
    ],
)
def test_bad_input_exits_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert needle in capsys.readouterr().err


def test_no_traceback_in_a_real_process() -> None:
    result = run_cli("check", "no/such/file.ode", "--set", "depth=3")
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_show_prints_parts_and_equations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(ROOT / "specs" / "hamiltonian.ode"), "--layers"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "stage1",
        "transition1",
        "hamiltonian",
        "exact",
        "y ← y + h·f(z, t)",
        "derived inverse",
        "transpose1",
    ):
        assert needle in out, needle


def test_help_has_examples() -> None:
    result = run_cli("check", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout


def test_show_draws_the_architecture(tmp_path: Path) -> None:
    target = tmp_path / "net.png"
    assert main(["show", str(ROOT / "specs" / "hamiltonian.ode"), "--draw", str(target)]) == 0
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize("name", ["net", "net.txt", "", "FOLDER"])
def test_show_draw_refuses_what_it_would_not_write_as_named(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """matplotlib appends .png to a name without a known suffix, so `--draw DIR` wrote
    `DIR.png` next to it, silently; such names are now usage errors, and nothing is written."""
    target = str(tmp_path) if name == "FOLDER" else str(tmp_path / name) if name else ""
    assert main(["show", str(ROOT / "specs" / "hamiltonian.ode"), "--draw", target]) == 2
    assert "expected a .png, .pdf or .svg file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not Path(str(tmp_path) + ".png").exists()


def test_check_names_a_checkpoint_spacing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`checkpoint(2)` was printed as `checkpoint`, its k dropped (audit, 2026-12-02)."""
    spec = tmp_path / "ck.ode"
    spec.write_text(
        "network two(depth: int = 4) {\n    input vector[6]\n"
        "    stage a = ode(depth) { integrator euler backward checkpoint(2) "
        "residual { linear(6) tanh } }\n}\n"
    )
    assert main(["check", str(spec)]) == 0
    assert "a (euler, N=4, checkpoint(2), inverse approximate)" in capsys.readouterr().out
