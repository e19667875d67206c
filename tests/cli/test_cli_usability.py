"""Findings of a user-journey audit of the command line: each bad argument is a one-line error
with a hint (exit 2), never a traceback, and options behave as the rest of the CLI does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from odedsl.cli.main import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
RESNET = str(SPECS / "resnet.ode")


def _exit_2(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI; it must exit 2 without a traceback: its stderr."""
    try:
        code = main(list(args))
    except SystemExit as exited:  # argparse's usage errors
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_parameter_set_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_2(capsys, "check", RESNET, "--set", "depth=4", "--set", "depth=8")
    assert "--set depth given twice ('depth=4' and 'depth=8') [E130]" in err
    assert "hint: give each parameter once" in err


def test_version_prints_the_installed_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata

    import odedsl
    from odedsl.cli.main import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"odedsl {importlib.metadata.version('odedsl')}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert version() == odedsl.__version__


@pytest.mark.parametrize(
    ("text", "depths"),
    [
        ("4,8,...,64", [4, 8, 16, 32, 64]),  # geometric, increasing
        ("8,4,...,1", [8, 4, 2, 1]),  # geometric, decreasing: 2 is a term
        ("64,32,...,4", [64, 32, 16, 8, 4]),
        ("3,5,...,9", [3, 5, 7, 9]),  # arithmetic, increasing
        ("10,7,...,1", [10, 7, 4, 1]),  # arithmetic, decreasing
        ("2,4,6,...,10", [2, 4, 6, 8, 10]),  # a third term makes 2,4 arithmetic
        ("4,8,...,8", [4, 8]),
    ],
)
def test_a_depth_progression_runs_both_ways(text: str, depths: list[int]) -> None:
    from odedsl.cli.gradcheck_cmd import parse_int_list

    assert parse_int_list(text, "--depths") == depths


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        (
            "2,4,...,10",
            "10 is not a term of 2,4,... (×2, geometric); the nearest terms are 8 and 16",
            "end at 8 or 16, e.g. 2,4,...,16",
        ),
        ("3,5,...,10", "the nearest terms are 9 and 11", "end at 9 or 11"),
        ("10,7,...,2", "the nearest terms are 1 and 4", "end at 1 or 4"),
        (
            "12,6,...,1",
            "1 is not a term of 12,6,... (÷2, geometric); the nearest term is 3",
            "end at 3",
        ),
        (
            "4,8,...,2",
            "increases (×2, geometric), so it cannot end at 2",
            "end it above 8, e.g. 4,8,...,16",
        ),
        (
            "8,4,...,16",
            "decreases (÷2, geometric), so it cannot end at 16",
            "end it below 4, e.g. 8,4,...,2",
        ),
        ("1,2,5,...,9", "neither a geometric nor an arithmetic progression", "e.g. 4,8,...,256"),
    ],
)
def test_a_depth_progression_refuses_an_end_off_it(
    text: str, message: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The end value used to be appended whatever it was (2,4,...,10 ran 2, 4, 8, 10) and a
    decreasing geometric one skipped terms (8,4,...,1 ran 8, 4, 1)."""
    err = _exit_2(capsys, "gradcheck", RESNET, "--depth-list", text)
    assert f"error: --depth-list {text!r}: " in err and f"{message} [E130]" in err
    assert f"hint: {hint}" in err


def test_more_threads_than_cpus_is_warned_about_and_none_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    import odedsl.cli.train_cmd as train_cmd

    before = torch.get_num_threads()
    monkeypatch.setattr(train_cmd, "usable_cpus", lambda: 2)
    try:
        train_cmd.set_threads(2, "plot")
        assert capsys.readouterr().err == ""
        train_cmd.set_threads(3, "plot")
        assert torch.get_num_threads() == 3  # a warning, not a refusal
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert err.startswith("odedsl plot: warning: --threads 3 is more than the 2 CPUs")
    assert "(try --threads 2 or fewer)" in err and err.count("\n") == 1
    err = _exit_2(capsys, "gradcheck", RESNET, "--threads", "0")
    assert "odedsl gradcheck: error: argument --threads: 0 is not between 1 and" in err


NO_MATPLOTLIB = importlib.util.find_spec("matplotlib") is None


@pytest.mark.skipif(NO_MATPLOTLIB, reason="the `plot` extra")
def test_show_draw_makes_missing_folders_as_plot_and_build_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plot -o`, `build -o` and `train --out` make missing folders; `--draw` refused them."""
    target = tmp_path / "figures" / "2026" / "arch.svg"
    assert main(["show", RESNET, "--json", "--draw", str(target)]) == 0
    assert target.read_bytes().startswith(b"<?xml")
    capsys.readouterr()


@pytest.mark.parametrize("command", ["plot", "show"])
def test_a_figure_under_a_file_is_refused_before_anything_runs(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`plot -o file/x.png` failed with FileExistsError (exit 1) after the whole sweep."""
    import odedsl.training.plot as plot

    def no_sweep(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep ran")

    monkeypatch.setattr(plot, "depth_sweep", no_sweep)
    (tmp_path / "notes").write_text("")
    target = str(tmp_path / "notes" / "sub" / "x.png")
    option = {"plot": "-o", "show": "--draw"}[command]
    err = _exit_2(capsys, command, RESNET, option, target)
    assert f"error: {option} {target!r}: cannot write there: " in err
    assert "is a file, so no folder can be made under it [E130]" in err
    assert "hint: name a file in a folder you can write in (missing folders are created)" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gradcheck", RESNET, "--threads", "0"], "argument --threads: 0 is not between 1 and"),
        (["check", RESNET, "--bogus"], "unrecognized arguments: --bogus"),
        (["check"], "the following arguments are required: spec"),
    ],
)
def test_a_usage_error_of_a_json_run_is_json_too(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other errors of a --json run are a JSON object on stdout; argparse's printed none."""
    import json

    with pytest.raises(SystemExit) as exited:
        main([*args, "--json"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False
    (error,) = data["errors"]
    assert message in error["message"] and error["code"] == "E130"
    assert error["hint"].endswith("--help lists the options")
    assert message in captured.err and "Traceback" not in captured.err  # and for people
    with pytest.raises(SystemExit):
        main(args)
    assert capsys.readouterr().out == ""  # no --json: stdout stays empty


def test_json_abbreviated_as_argparse_accepts_it_makes_usage_errors_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    for spelling in ("--js", "--jso"):
        with pytest.raises(SystemExit):
            main(["check", RESNET, "--bogus", spelling])
        assert json.loads(capsys.readouterr().out)["errors"][0]["code"] == "E130"
    with pytest.raises(SystemExit):  # an operand after -- is no option
        main(["check", RESNET, "--bogus", "--", "--js"])
    assert capsys.readouterr().out == ""


CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 10000000000000 bytes. Error code 12 (Cannot allocate memory)"
)
CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.8 GiB "
    "of which 1.2 GiB is free. Of the allocated memory 130 GiB is allocated by PyTorch"
)


@pytest.mark.parametrize(
    ("command", "target", "shown", "hint"),
    [
        (
            "train",
            "odedsl.training.api.train",
            "DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 10000000000000 bytes",
            "use a smaller --batch-size, --backward invert or checkpoint(k)",
        ),
        (
            "gradcheck",
            "odedsl.training.gradcheck.gradient_errors",
            "CUDA out of memory. Tried to allocate 20.00 GiB",
            "use a smaller --batch or depth (--set depth=N, --depth-list)",
        ),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_running_out_of_memory_is_one_line_with_what_to_shrink(
    command: str,
    target: str,
    shown: str,
    hint: str,
    as_json: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The raw RuntimeError (a paragraph of allocator statistics from CUDA) was printed."""
    import json

    import torch

    error = RuntimeError(CPU_OOM) if command == "train" else torch.OutOfMemoryError(CUDA_OOM)

    def exhausted(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(target, exhausted)
    before = torch.get_num_threads()
    try:
        code = main([command, RESNET, *(["--json"] if as_json else [])])
    finally:
        torch.set_num_threads(before)
    assert code == 1
    captured = capsys.readouterr()
    line, hint_line = captured.err.splitlines()
    assert line == f"odedsl {command}: error: out of memory ({shown})"
    assert hint_line.startswith(f"  hint: {hint}")
    if as_json:
        (reported,) = json.loads(captured.out)["errors"]
        assert reported["message"] == f"out of memory ({shown})"
        assert reported["hint"].startswith(hint)
    else:
        assert captured.out == ""


@pytest.mark.parametrize("data", ["synthetic", "digits"])
def test_train_of_a_vector_network_says_its_data_sets_are_images(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hint used to say to declare channels and size, which a vector input cannot use."""
    spec = str(SPECS / "linear_resnet.ode")
    err = _exit_2(capsys, "train", spec, "--data", data, "--quiet", "--out", str(tmp_path / "r"))
    assert "network 'linear_resnet' (" in err
    assert (
        f"takes input vector[2], but the data sets of odedsl train ('{data}' here) are images, "
        "which need input image[C, H, W] [E220]"
    ) in err
    assert "hint: train it on your own data: from Python (odedsl.compile(spec)" in err
    assert "train_linear_resnet.py: replace its synthetic() data with yours" in err
    assert not (tmp_path / "r").exists()


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def test_check_show_and_build_read_the_spec_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-` was looked up as a file: "cannot read '-': no such file"."""
    text = (SPECS / "linear_resnet.ode").read_text()
    _stdin(monkeypatch, text)
    assert main(["check", "-", "--set", "depth=4"]) == 0
    assert "ok: network 'linear_resnet', input [2]" in capsys.readouterr().out
    _stdin(monkeypatch, text)
    assert main(["show", "-", "--json"]) == 0
    assert '"name": "linear_resnet"' in capsys.readouterr().out
    _stdin(monkeypatch, text)
    assert main(["build", "-", "-o", str(tmp_path), "--set", "depth=3"]) == 0
    assert (tmp_path / "linear_resnet.py").is_file()
    assert (tmp_path / "train_linear_resnet.py").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("command", ["check", "show", "build"])
def test_diagnostics_of_a_spec_from_stdin_name_stdin(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _stdin(
        monkeypatch, "network n() { input vector[4]\n stage s = ode(2) { residual { nope } } }\n"
    )
    extra = ["-o", str(tmp_path)] if command == "build" else []
    err = _exit_2(capsys, command, "-", *extra)
    assert err.startswith("<stdin>:2:32: error: unknown layer or block 'nope' [E201]")
    _stdin(monkeypatch, "foo")  # one line without braces: still spec text, not a path
    assert _exit_2(capsys, command, "-", *extra).startswith("<stdin>:1:1: error: ")


@pytest.mark.parametrize("command", ["train", "gradcheck", "plot"])
def test_commands_that_read_files_refuse_stdin_saying_which_read_it(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _exit_2(capsys, command, "-")
    assert (
        f"odedsl {command}: error: argument spec: '-' (the spec from standard input) is read "
        "by check, show and build only; save the spec to a file and name it, e.g. spec.ode"
    ) in err


FLAGGED = (
    'network n(bn: bool = false, tag: str = "a") {\n'
    "    input vector[2]\n"
    "    stage s = ode(2) { residual { linear(2) } }\n"
    "}\n"
)


def test_the_python_api_names_parameters_as_keyword_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`odedsl.compile(path, depth='8')` was told about `--set depth='8'`, an option it has not;
    the command line keeps its own spelling, and the API's is back once a command is done."""
    import odedsl
    from odedsl.diagnostics import DslError

    with pytest.raises(DslError) as api:
        odedsl.compile(RESNET, depth="8")
    (d,) = api.value.diagnostics
    assert (d.message, d.hint) == (
        "depth='8': parameter 'depth' is int",
        "pass a whole number, e.g. depth=8",
    )
    spec = tmp_path / "flagged.ode"
    spec.write_text(FLAGGED)
    with pytest.raises(DslError) as api:
        odedsl.compile(str(spec), bn=3, tag=4)
    hints = [d.hint for d in api.value.diagnostics]
    assert hints == ["pass true or false, e.g. bn=True", "pass a text, e.g. tag='name'"]
    assert "--set" not in str(api.value)

    err = _exit_2(capsys, "check", str(spec), "--set", "bn=3", "--set", "tag=4")
    assert "error: --set bn=3: parameter 'bn' is bool [E130]" in err
    assert "hint: pass true or false, e.g. --set bn=true" in err
    assert "hint: pass a text, e.g. --set tag=name" in err
    with pytest.raises(DslError, match=r"e\.g\. depth=8"):  # the command reset the API's spelling
        odedsl.compile(RESNET, depth="8")


def test_an_empty_spec_is_named_so_not_the_current_folder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`odedsl.compile("")` said "cannot read '.': a directory" (Path("") is ".")."""
    import odedsl
    from odedsl.diagnostics import DslError

    with pytest.raises(DslError) as api:
        odedsl.compile("")
    (d,) = api.value.diagnostics
    assert d.message == "the spec is an empty string" and "'.'" not in str(api.value)
    assert d.hint == "pass the path of a .ode file (e.g. 'specs/resnet.ode') or a spec's text"
    err = _exit_2(capsys, "check", "")
    assert "odedsl check: error: argument spec: expected the path of a .ode file, got ''" in err


def test_stdin_is_read_within_the_spec_limit_as_utf8(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"// \xc3\xa9\nnetwork \xff")))
    err = _exit_2(capsys, "check", "-")
    # located as a file's bad byte is: line 2, column 9 (the é before it is one character)
    assert "<stdin>:2:9: error: <stdin> is not UTF-8 text (byte 14: 0xff) [E110]" in err
    assert "network \ufffd\n" in err and "        ^" in err
    monkeypatch.setenv("ODEDSL_MAX_SPEC_BYTES", "16")
    _stdin(monkeypatch, (SPECS / "linear_resnet.ode").read_text())
    err = _exit_2(capsys, "check", "-")
    assert "<stdin>:1:1: error: <stdin> has more than 16 bytes, over the limit of 16 [E101]" in err
    assert "raise ODEDSL_MAX_SPEC_BYTES" in err


def test_odedsl_warnings_print_as_the_commands_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's odedsl warnings (approximate gradients, anchors) printed as Python prints them,
    ``<library path>:402: ApproximateGradientWarning:`` and a line of library source; other
    libraries' warnings still print as Python prints them."""
    import warnings

    from odedsl.cli import check_cmd
    from odedsl.cli.main import main
    from odedsl.runtime import ApproximateGradientWarning

    def run(args: object) -> int:
        approximate = ApproximateGradientWarning("stage 'body': approximate", stage="body")
        warnings.warn(approximate, stacklevel=1)
        warnings.warn("from another library", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(check_cmd, "run", run)
    before = warnings.showwarning
    with pytest.warns(RuntimeWarning, match="another library") as caught:
        assert main(["check", "specs/resnet.ode"]) == 0
    err = capsys.readouterr().err
    assert "odedsl check: warning: stage 'body': approximate\n" in err
    assert "ApproximateGradientWarning" not in err
    assert [w.category for w in caught] == [RuntimeWarning]
    assert warnings.showwarning is before


@pytest.mark.parametrize(
    "args",
    [
        ["gradcheck", "specs/resnet.ode", "--set", "depth=8", "--depth-list", "2,4"],
        ["plot", "specs/resnet.ode", "--set", "depth=8", "--depths", "2,4"],
        ["plot", "specs/resnet.ode", "--set", "depth=8"],  # plot always sweeps
    ],
)
def test_a_depth_set_beside_a_depth_sweep_is_said_to_be_replaced(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep set every run's depth and dropped ``--set depth`` without a word."""
    import odedsl.training.gradcheck as gradcheck

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the warning comes before any check runs

    monkeypatch.setattr(gradcheck, "gradient_errors", stop)
    monkeypatch.setattr("odedsl.training.plot.depth_sweep", stop)
    assert main(args) == 130
    assert "warning: --set depth=8 is replaced by each depth of --dep" in capsys.readouterr().err


def test_one_layer_is_one_layer() -> None:
    import odedsl
    from odedsl.diagnostics import DslError

    spec = (
        "network n(depth: int = 1) { input vector[2] stage s = ode(depth) {"
        " integrator euler weights shared(2) residual { linear(2) } } }"
    )
    with pytest.raises(DslError, match=r"the stage's 1 layer( \[|$)"):
        odedsl.compile(spec)
