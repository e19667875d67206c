"""Every option of every benchmark refuses a bad value at parse time: exit 2 and a message
naming the option (no traceback, nothing measured): numbers out of range, ``--out`` at a file, a
``--device`` torch cannot use, an unknown ``--backend``, and ``benchmarks.plot`` of a file that
is not a benchmark's result. These tests take milliseconds (one redraws a recorded figure)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from benchmarks import compile as compile_bench
from benchmarks import modes, overhead, peers, plot

BENCHMARKS: dict[str, ModuleType] = {
    "modes": modes,
    "peers": peers,
    "compile": compile_bench,
    "overhead": overhead,
}

# bad values by kind of option (each benchmark's own bounds: see its parse_args)
NOT_INT = ["2.5", "x", "nan", ""]
DEPTH = ["0", "-1", "100001", *NOT_INT]  # 100001: above the default ODEDSL_MAX_DEPTH
WIDTH = ["0", "-1", "65537", *NOT_INT]
BATCH = ["0", "-1", "65537", *NOT_INT]
SIZE = ["0", "-1", "16385", *NOT_INT]
COUNT = ["0", "-1", "1000001", *NOT_INT]
GAMMA = ["0", "-0.5", "1.5", "nan", "inf", "x"]  # (0, 1]: 0 has no inverse
BUDGET = ["-1", "nan", "inf", "1e7", "x"]  # 0 is --quick's own: --min-repeat rounds
SEED = ["-1", "4294967296", *NOT_INT]
THREADS_OR_0 = ["-1", "1025", *NOT_INT]  # 0: torch's default
COMMON = {
    "--depths": DEPTH,
    "--width": WIDTH,
    "--hidden": WIDTH,
    "--batch": BATCH,
    "--size": SIZE,
    "--gamma": GAMMA,
    "--repeat": COUNT,
    "--min-repeat": COUNT,
    "--budget": BUDGET,
    "--grad-batch": BATCH,
    "--threads": THREADS_OR_0,
    "--seed": SEED,
}
OPTIONS: dict[str, dict[str, list[str]]] = {
    "modes": {**COMMON, "--checkpoint-every": ["0", "-1", "100001", "2.5", "x", "Sqrt"]},
    "peers": COMMON,
    "compile": {
        "--depths": DEPTH,
        "--unrolled-depths": DEPTH,
        "--width": [*WIDTH, "5"],  # a Hamiltonian stage: even
        "--hidden": WIDTH,
        "--batch": BATCH,
        "--size": SIZE,
        "--repeat": COUNT,
        "--threads": ["0", "-1", "1025", *NOT_INT],
    },
    "overhead": {
        "--width": WIDTH,
        "--hidden": WIDTH,
        "--batch": BATCH,
        "--depth": DEPTH,
        "--rounds": COUNT,
        "--feature-depth": DEPTH,
        "--feature-rounds": COUNT,
    },
}
# options that are not numbers but crashed on a bad value, and bad combinations of valid
# values: (benchmark, argv, the option the message must name)
OTHERS = [
    ("modes", ["--width", "7"], "--width"),  # hamiltonian and additive_coupling split it
    ("modes", ["--quick", "--width", "7"], "--width"),
    ("peers", ["--width", "7"], "--width"),  # the coupling and hamiltonian groups
    ("peers", ["--groups", "coupling", "--width", "7"], "--width"),
    ("compile", ["--quick", "--width", "5"], "--width"),
    ("overhead", ["--width", "7"], "--width"),  # --features hamiltonian
    ("overhead", ["--integrators", "eulr"], "--integrators"),
    ("overhead", ["--features", "eulr"], "--features"),
    ("overhead", ["--measuring", "eulr"], "--measuring"),
]


@pytest.fixture(autouse=True)
def default_depth_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODEDSL_MAX_DEPTH", raising=False)


def _quiet(*_: Any) -> None:
    pass


def _exits_2_naming(
    name: str, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> str:
    with pytest.raises(SystemExit) as exit_:
        BENCHMARKS[name].main(argv, log=_quiet)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (argv, err)
    assert option in err and "error:" in err and "Traceback" not in err, (argv, err)
    return " ".join(err.split())  # argparse wraps the usage, not the message


@pytest.mark.parametrize(
    ("name", "option", "bad"),
    [(n, o, bad) for n, options in OPTIONS.items() for o, bad in options.items()],
)
def test_a_bad_value_is_a_usage_error_naming_the_option(
    name: str, option: str, bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in bad:
        argv = [f"{option}={value}", "--out", str(tmp_path)]
        _exits_2_naming(name, argv, option, capsys)


@pytest.mark.parametrize(("name", "argv", "option"), OTHERS)
def test_other_bad_arguments_are_usage_errors(
    name: str, argv: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _exits_2_naming(name, [*argv, "--out", str(tmp_path)], option, capsys)


def test_every_numeric_option_is_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """An option added later (a number type, or ``type=int``/``float``) fails here until the
    table lists it, with its bad values."""
    caught: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, *args: Any) -> argparse.Namespace:
        caught.append(self)
        return original(self, *args)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    for name, module in BENCHMARKS.items():
        module.parse_args([])
        numeric = {
            a.option_strings[-1]
            for a in caught[-1]._actions
            if a.option_strings and (a.type in (int, float) or hasattr(a.type, "bounds"))
        }
        assert numeric == set(OPTIONS[name]), name


def test_the_defaults_parse_unchanged() -> None:
    args = modes.parse_args([])
    assert (args.depths, args.width, args.batch, args.budget) == ([10, 100, 1000], 64, 256, 150.0)
    assert (args.gamma, args.threads, args.seed, args.checkpoint_every) == (0.9, 1, 0, "sqrt")
    quick = modes.parse_args(["--quick", "--budget", "0", "--threads", "0"])
    assert (quick.budget, quick.repeat, quick.min_repeat, quick.threads) == (0.0, 1, 1, 0)
    assert modes.parse_args(["--checkpoint-every", "4"]).checkpoint_every == "4"
    assert modes.parse_args(["--integrators", "euler", "--width", "7"]).width == 7
    args = peers.parse_args([])
    assert (args.depths, args.width, args.budget, args.gamma) == ([16, 128, 1024], 64, 150.0, 0.9)
    assert peers.parse_args(["--groups", "resnet", "--width", "7"]).width == 7
    assert peers.parse_args(["--gamma", "1"]).gamma == 1.0
    args = compile_bench.parse_args([])
    assert (args.depths, args.unrolled_depths, args.width, args.threads) == (
        [8, 64, 512],
        [8, 64],
        16,
        1,
    )
    assert compile_bench.parse_args(["--quick", "--unrolled-depths"]).unrolled_depths == []
    args = overhead.parse_args([])
    assert (args.width, args.depth, args.rounds, args.feature_rounds) == (64, 100, 7, 30)
    assert overhead.parse_args(["--features", "euler", "--measuring", "momentum", "--width", "7"])


# ----------------------------------------------------------------------------- paths and names
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_out_at_a_file_is_a_usage_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mkdir`` raised NotADirectoryError once measured (other folders that cannot be made:
    the tests of ``out_folder`` in tests/cli)."""
    (tmp_path / "afile").write_text("")
    _exits_2_naming(name, ["--out", str(tmp_path / "afile" / "below")], "--out", capsys)


@pytest.mark.parametrize("name", ["modes", "peers", "compile"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "meta", "nowhere", ""])
def test_a_device_torch_cannot_use_here_is_a_usage_error(
    name: str,
    device: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--device cuda`` where torch sees no GPU: exit 2 at parse time (a traceback at the
    first tensor moved before)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _exits_2_naming(name, ["--device", device, "--out", str(tmp_path)], "--device", capsys)


def test_a_cuda_device_torch_does_not_see_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert modes.parse_args(["--device", "cuda:0"]).device == "cuda:0"
    _exits_2_naming("modes", ["--device", "cuda:1", "--out", str(tmp_path)], "--device", capsys)


def _gpu_sh_commands() -> list[list[str]]:
    """The python commands of ``benchmarks/gpu.sh`` (continuation lines joined)."""
    text = (RESULTS.parent / "gpu.sh").read_text().replace("\\\n", " ")
    return [
        shlex.split(m.group(1))
        for m in re.finditer(r"^\s*part \S+ \d+ python3 (.*)$", text, re.M)
        if "pytest" not in m.group(1)
    ]


def test_gpu_sh_parses_where_torch_sees_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of ``gpu.sh`` (``--device cuda`` and its ``--quick`` dry run) parses on a
    machine with a GPU; its example is run up to ``setup``, where it would start."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.syspath_prepend(str(RESULTS.parents[1] / "examples"))
    import _common

    class Reached(Exception):
        pass

    def setup(args: argparse.Namespace) -> None:
        raise Reached(args)

    monkeypatch.setattr(_common, "setup", setup)
    commands = _gpu_sh_commands()
    assert len(commands) == 8 and sum("cuda" in c for c in commands) == 4, commands
    for command in commands:
        benchmark = command[0] == "-m"
        argv = [str(tmp_path) if a.startswith("$work") else a for a in command[1 + benchmark :]]
        if benchmark:
            BENCHMARKS[command[1].removeprefix("benchmarks.")].parse_args(argv)
        else:
            with pytest.raises(Reached):
                importlib.import_module(Path(command[0]).stem).main(argv)


def test_an_unknown_compile_backend_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for backend in ("nonsense", "Inductor", ""):
        argv = ["--backend", backend, "--out", str(tmp_path)]
        err = _exits_2_naming("compile", argv, "--backend", capsys)
        assert "inductor" in err
    args = compile_bench.parse_args(["--backend", "aot_eager"])
    assert args.backend == "aot_eager"
    assert compile_bench.parse_args(["--backend", "inductor"]).backend == "inductor"


def test_a_bad_worker_configuration_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--worker`` is the parent's JSON to its worker process (hidden, but a typo there is no
    traceback either)."""
    for config in ("x", "[1]", '{"mode": "store"}'):
        _exits_2_naming("compile", ["--worker", config], "--worker", capsys)


# ----------------------------------------------------------------------------- benchmarks.plot
def _plot_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        plot.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (argv, err)
    assert "JSON" in err and "error:" in err and "Traceback" not in err, (argv, err)
    return " ".join(err.split())


def test_plot_of_a_file_that_is_no_benchmark_result_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not.json").write_text("{")
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "other.json").write_text('{"benchmark": "sorting"}')
    example = RESULTS.parents[1] / "examples" / "results" / "tied_to_untied.json"
    for path in ("missing.json", ".", "not.json", "list.json", "other.json", str(example)):
        assert "argument JSON" in _plot_exits_2([str(tmp_path / path)], capsys)
    assert "no 'benchmark' key" in _plot_exits_2([str(example)], capsys)
    assert "required: JSON" in _plot_exits_2([], capsys)


def test_plot_of_a_result_without_what_the_plot_needs_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, payload in (("norows", {"benchmark": "modes"}), ("empty", {"benchmark": "peers"})):
        if name == "empty":
            payload = {**json.loads((RESULTS / "peers-cpu2.json").read_text()), "rows": []}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(payload))
        _plot_exits_2([str(path)], capsys)
        assert not path.with_suffix(".png").exists()


def test_plot_redraws_recorded_results_and_skips_those_without_a_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m benchmarks.plot benchmarks/results/*.json``: the compile and overhead results
    have no figure (a KeyError before); the modes one is drawn."""
    pytest.importorskip("matplotlib")
    for name in ("compile-cpu2.json", "overhead-cpu2.json", "modes-cpu2.json"):
        shutil.copyfile(RESULTS / name, tmp_path / name)
    plot.main(sorted(str(p) for p in tmp_path.iterdir()))
    out, err = capsys.readouterr()
    assert "skipped" in err and "compile draws no figure" in err and "overhead" in err
    assert (tmp_path / "modes-cpu2.png").stat().st_size > 10_000 and "wrote" in out


def test_checkpoint_every_says_sqrt_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--checkpoint-every", "2.5", "--out", str(tmp_path)]
    err = _exits_2_naming("modes", argv, "--checkpoint-every", capsys)
    assert "expected sqrt or an integer between 1 and 100000, got '2.5'" in err


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_bad_environment_value_is_a_usage_error_naming_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmarks check the ``ODEDSL_*`` environment as the ``odedsl`` commands do; an
    unknown name is a warning on stderr, and the arguments still parse."""
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "maybe")
    _exits_2_naming(name, ["--out", str(tmp_path)], "ODEDSL_CHECK_FORWARD='maybe'", capsys)
    monkeypatch.delenv("ODEDSL_CHECK_FORWARD")
    monkeypatch.setenv("ODEDSL_MAX_DEPHT", "3")
    BENCHMARKS[name].parse_args(["--out", str(tmp_path)])
    assert "did you mean ODEDSL_MAX_DEPTH?" in capsys.readouterr().err


def test_result_files_are_named_by_machine_and_options() -> None:
    """``result_tag``: ``-quick`` and ``-unscaled`` runs do not overwrite full ones; compile has
    no ``--unscaled``."""
    from benchmarks.common import machine_tag, result_tag

    machine = machine_tag("cpu")
    args = modes.parse_args(["--quick", "--unscaled"])
    assert result_tag(args) == f"{machine}-quick-unscaled"
    assert result_tag(modes.parse_args([])) == machine
    assert result_tag(compile_bench.parse_args(["--quick"])) == f"{machine}-quick"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--seeds", "0"], "--seeds"),  # was a traceback from max() after the parse
        (["--depths", "0"], "--depths"),  # was the compiler's error
        (["--integrators", "hamiltonian"], "--integrators"),  # its residual is not split
        (["--p", "1"], "--p"),
        (["--threads", "0"], "--threads"),
        (["--out", "FILE"], "--out"),
    ],
)
def test_dropout_order_refuses_a_bad_value_before_measuring(
    argv: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import dropout_order

    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        dropout_order.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and option in err and "Traceback" not in err, err
