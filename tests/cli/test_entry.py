"""The console script: importing it is light (no torch), so a Ctrl-C during start-up meets
``entry``'s handler and ends with ``interrupted`` and exit code 130, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import odedsl.cli.main as cli_main
from odedsl.cli.common import EXIT_BAD_INPUT


def test_importing_the_cli_does_not_import_torch() -> None:
    code = (
        "import sys, odedsl.cli.main\n"
        "heavy = sorted(m for m in ('torch', 'odedsl.cli.common', 'odedsl.cli.environment') "
        "if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


ROOT = Path(__file__).resolve().parents[2]

#: Runs the commands in one process, in order: whatever a command imports stays imported.
_START_UP = """
import contextlib, io, json, sys
from odedsl.cli.main import COMMANDS, main

def run(*argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return main(list(argv))
        except SystemExit as exited:
            return exited.code

codes = [run(), run("--help"), *(run(c, "--help") for c in COMMANDS)]
codes += [run("train", "x.ode", "--seed", "-1"), run("check")]  # usage errors
light = "torch" not in sys.modules
codes += [run("check", "specs/resnet.ode"), run("show", "specs/resnet.ode")]
heavy = ("torch._dynamo", "odedsl.runtime.stage", "odedsl.training.loop")
print(json.dumps({"codes": codes, "light": light, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def test_help_imports_no_torch_and_check_no_dynamo() -> None:
    """Start-up time: the usage line, ``--help`` (also a command's) and usage errors import no
    torch (over a second); ``check`` and ``show`` import torch but not ``torch._dynamo`` (about
    another second, which importing :mod:`odedsl.runtime.stage` or the training loop costs)."""
    done = subprocess.run(
        [sys.executable, "-c", _START_UP], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["codes"] == [2, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0], got
    assert got["light"], "odedsl --help or a usage error imported torch"
    assert got["heavy"] == [], "odedsl check or show imported torch's compiler"


def test_exit_bad_input_and_build_parser_stay_importable_from_main() -> None:
    from odedsl.cli.main import EXIT_BAD_INPUT as from_main
    from odedsl.cli.main import build_parser

    assert from_main == EXIT_BAD_INPUT == 2
    assert build_parser().prog == "odedsl"


def _interrupt(*args: object, **kwargs: object) -> int:
    raise KeyboardInterrupt


def test_entry_turns_an_interrupt_into_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main, "main", _interrupt)
    with pytest.raises(SystemExit) as exited:
        cli_main.entry()
    assert exited.value.code == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "interrupted"
    assert "Traceback" not in captured.err + captured.out


def test_main_turns_an_interrupt_while_loading_commands_into_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main, "build_parser", _interrupt)
    assert cli_main.main(["check", "x.ode"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_python_dash_m_odedsl_is_the_console_script(tmp_path) -> None:
    spec = tmp_path / "bad.ode"
    spec.write_text("network n() { input vector[4] stage s = ode(2) { residual { nope } } }\n")
    done = subprocess.run(
        [sys.executable, "-m", "odedsl", "check", str(spec)], capture_output=True, text=True
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "bad.ode:1:" in done.stderr and "^" in done.stderr
    assert "Traceback" not in done.stderr
    usage = subprocess.run([sys.executable, "-m", "odedsl"], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: odedsl ")
