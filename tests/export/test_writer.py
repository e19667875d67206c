"""Where ``odedsl build`` writes: inside ``-o DIR`` only, atomically, never over a file a person
wrote or edited unless ``--force``; and its exit codes (0 written, 2 bad input, 1 I/O error)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from odedsl.cli.main import main
from odedsl.export.writer import is_untouched

from .helpers import SPECS

SPEC = str(SPECS / "revnet.ode")
SMALL = ["--set", "depth=2", "--set", "width=4", "--set", "size=8"]


def build(out: Path, *extra: str) -> int:
    return main(["build", SPEC, "-o", str(out), *SMALL, *extra])


def test_writes_two_generated_files_and_rewrites_them(tmp_path: Path) -> None:
    assert build(tmp_path / "new" / "dir") == 0
    files = sorted(p.name for p in (tmp_path / "new" / "dir").iterdir())
    assert files == ["revnet.py", "train_revnet.py"]  # no temporary files left behind
    assert all(is_untouched(p) for p in (tmp_path / "new" / "dir").iterdir())
    deeper = ["build", SPEC, "-o", str(tmp_path / "new" / "dir"), "--set", "depth=3"]
    assert main([*deeper, "--set", "width=4", "--set", "size=8"]) == 0  # untouched: replaced
    assert "DEPTH = 3" in (tmp_path / "new" / "dir" / "revnet.py").read_text()


@pytest.mark.parametrize("edit", ["hand-written", "edited"])
def test_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    target = tmp_path / "train_revnet.py"
    if edit == "hand-written":
        target.write_text("print('mine')\n")
    else:
        assert build(tmp_path) == 0
        target.write_text(target.read_text() + "# my change\n")
    before = target.read_text()
    (tmp_path / "revnet.py").unlink(missing_ok=True)
    assert build(tmp_path) == 2
    err = capsys.readouterr().err
    assert "E261" in err and "--force" in err and "Traceback" not in err
    assert target.read_text() == before
    assert not (tmp_path / "revnet.py").exists()  # all targets are checked before any write
    assert build(tmp_path, "--force") == 0
    assert is_untouched(target)


def test_never_writes_through_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "revnet.py").symlink_to(outside)
    assert build(out, "--force") == 2
    assert "E261" in capsys.readouterr().err
    assert outside.read_text() == "precious\n"


def test_output_folder_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert build(tmp_path / "file") == 2
    assert "not a folder" in capsys.readouterr().err


def test_network_option_cannot_name_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", SPEC, "-o", str(tmp_path), "--network", "../../etc/x"]) == 2
    assert "no network named" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "missing.ode"], "E110"),
        (["build", SPEC, "--set", "depth"], "expected NAME=VALUE"),
        (["build", SPEC, "--set", "nope=1"], "no parameter 'nope'"),
        (["build", SPEC, "--set", "depth=x"], "parameter 'depth' is int"),
        (["build", str(SPECS / "blocks.ode")], "defines no network"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_folder_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    elif Path("/proc/self").is_dir():
        out = Path("/proc/self/odedsl-export-test")  # even root cannot create folders here
    else:
        pytest.skip("no folder this user cannot write to")
    try:
        assert build(out) == 1
        err = capsys.readouterr().err
        assert "cannot write" in err and "Traceback" not in err
    finally:
        if out.is_relative_to(tmp_path):
            out.chmod(0o700)


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["build", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "odedsl build specs/heunnet.ode -o out/" in out
    assert "--standalone" in out and "--force" in out
