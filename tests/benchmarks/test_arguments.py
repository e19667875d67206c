"""Every numeric option of every benchmark refuses a bad value at parse time: exit 2 and a
message naming the option (no traceback, nothing measured), so these tests take milliseconds."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from benchmarks import compile as compile_bench
from benchmarks import modes, overhead, peers

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
) -> None:
    with pytest.raises(SystemExit) as exit_:
        BENCHMARKS[name].main(argv, log=_quiet)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (argv, err)
    assert option in err and "error:" in err and "Traceback" not in err, (argv, err)


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
        if name == "modes":
            numeric.add("--checkpoint-every")  # sqrt or an integer: checked after parsing
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
