"""Every option of every example script refuses a bad value at parse time: exit 2 and a message
naming the option (no traceback, no run): numbers out of range, and ``--replot`` of a file that
is not this experiment's record, ``--out`` at a file, a ``--device`` torch cannot use. Nothing
here trains: a bad value must fail before anything starts, so these tests take milliseconds
(one replot draws a recorded run's figure)."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _common as C
import pytest
import torch

SCRIPTS = (
    "adjoint_accuracy_vs_depth",
    "deepest_hamiltonian",
    "gradient_error_vs_depth",
    "linear_resnet_smoothness",
    "reversible_memory",
    "tied_to_untied",
)

# bad values by kind of option (each script's own bounds: see its add_argument calls)
NOT_INT = ["2.5", "x", "nan", ""]
DEPTH = ["0", "-1", "100001", *NOT_INT]  # 100001: above the default ODEDSL_MAX_DEPTH
DEPTH_OR_0 = ["-1", "100001", *NOT_INT]
POSITIVE = ["0", "-1", "nan", "inf", "-inf", "x", ""]
EPOCHS = [*POSITIVE, "10001"]
TRAIN_BATCH = ["0", "1", "-2", "1439", *NOT_INT]  # BatchNorm: 2; digits: 1438 training images
SEED = ["-1", "4294967296", *NOT_INT]
STEPS = ["0", "-1", "1000001", *NOT_INT]
STEPS_OR_0 = ["-1", "1000001", *NOT_INT]
NOISE = ["-1", "nan", "inf", "x", "1_0", ""]  # real_in: ASCII numbers only
SECONDS = [*POSITIVE, "1e7"]

OPTIONS: dict[str, dict[str, list[str]]] = {
    "adjoint_accuracy_vs_depth": {
        "--depths": DEPTH,
        "--epochs": EPOCHS,
        "--lr": POSITIVE,
        "--batch-size": TRAIN_BATCH,
        "--seeds": SEED,
        "--probe-batch": TRAIN_BATCH,
        "--noise": NOISE,
    },
    "deepest_hamiltonian": {
        "--batch": ["0", "1", "65537", *NOT_INT],
        "--size": ["0", "3", "16385", *NOT_INT],  # two 2×2 poolings: 4 at least
        "--start": DEPTH,
        "--max-depth": DEPTH,
        "--steps": STEPS,
        "--step-budget": SECONDS,
        "--budget": SECONDS,
        "--memory-cap-mib": POSITIVE,
        "--seed": SEED,
    },
    "gradient_error_vs_depth": {
        "--depths": DEPTH,
        "--train-depth": DEPTH,
        "--epochs": EPOCHS,
        "--lr": POSITIVE,
        "--batch": ["0", "-1", "1439", *NOT_INT],
        "--seeds": SEED,
    },
    "linear_resnet_smoothness": {
        "--depths": DEPTH,
        "--iterations": STEPS,
        "--eta": POSITIVE,
        "--samples": ["0", "-1", "1000001", *NOT_INT],
        "--seed": SEED,
        "--init-scale": ["-1", "nan", "inf", "x"],
        "--log-every": STEPS,
    },
    "reversible_memory": {
        "--depths": DEPTH,
        "--steps": STEPS_OR_0,
        "--store-steps-1000": STEPS_OR_0,
        "--max-train-depth": DEPTH_OR_0,
        "--gradcheck-max-depth": DEPTH_OR_0,
        "--batch": ["0", "1", "65537", *NOT_INT],
        "--width": ["0", "-1", "65537", *NOT_INT],
        "--channels": ["0", "-1", "65537", *NOT_INT],
        "--size": ["0", "-1", "16385", *NOT_INT],
        "--lr": POSITIVE,
        "--seed": SEED,
    },
    "tied_to_untied": {
        "--tied-depth": DEPTH,
        "--depth": DEPTH,
        "--pretrain-epochs": EPOCHS,
        "--finetune-epochs": EPOCHS,
        "--lr": POSITIVE,
        "--finetune-lr": POSITIVE,
        "--batch-size": TRAIN_BATCH,
        "--seeds": SEED,
        "--noise": NOISE,
    },
}
# the options _common.parser adds to every script
SHARED = {"--threads": ["0", "-1", "1025", *NOT_INT]}

# bad combinations of valid values: (script, argv, the option the message must name)
COMBINATIONS = [
    ("deepest_hamiltonian", ["--start", "64", "--max-depth", "32"], "--start"),
    ("deepest_hamiltonian", ["--device", "nowhere"], "--device"),
    ("gradient_error_vs_depth", ["--bn", "train", "--batch", "1"], "--batch"),
    ("linear_resnet_smoothness", ["--iterations", "100000", "--log-every", "1"], "--log-every"),
    ("reversible_memory", ["--size", "3"], "--size"),  # the hamiltonian network pools twice
    ("reversible_memory", ["--batch", "2000"], "--batch"),  # digits: 1438 training images
    ("reversible_memory", ["--device", "nowhere"], "--device"),
    ("tied_to_untied", ["--tied-depth", "8", "--depth", "4"], "--depth"),
]


class Reached(Exception):
    """Raised instead of ``_common.setup``: the arguments parsed, nothing ran."""


@pytest.fixture(autouse=True)
def default_depth_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODEDSL_MAX_DEPTH", raising=False)


def _script(name: str) -> ModuleType:
    return importlib.import_module(name)


def _cases() -> Iterator[tuple[str, str, list[str]]]:
    for script in SCRIPTS:
        for option, bad in {**OPTIONS[script], **SHARED}.items():
            yield script, option, bad


def _exits_2_naming(
    script: str, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> str:
    with pytest.raises(SystemExit) as exit_:
        _script(script).main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (argv, err)
    assert option in err and "error:" in err and "Traceback" not in err, (argv, err)
    return " ".join(err.split())  # argparse wraps the usage, not the message


@pytest.mark.parametrize(("script", "option", "bad"), list(_cases()))
def test_a_bad_value_is_a_usage_error_naming_the_option(
    script: str, option: str, bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in bad:
        _exits_2_naming(script, [f"{option}={value}", "--out", str(tmp_path)], option, capsys)


@pytest.mark.parametrize(("script", "argv", "option"), COMBINATIONS)
def test_a_bad_combination_is_a_usage_error_naming_the_option(
    script: str, argv: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _exits_2_naming(script, [*argv, "--no-plot", "--out", str(tmp_path)], option, capsys)


def test_every_numeric_option_is_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """An option added later (a number type, or ``type=int``/``float``) fails here until the
    table lists it, with its bad values."""
    caught: list[argparse.ArgumentParser] = []

    def parse_args(self: argparse.ArgumentParser, *_: object) -> None:
        caught.append(self)
        raise Reached

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    for script in SCRIPTS:
        with pytest.raises(Reached):
            _script(script).main([])
        numeric = {
            a.option_strings[-1]
            for a in caught[-1]._actions
            if a.option_strings and (a.type in (int, float) or hasattr(a.type, "bounds"))
        }
        assert numeric == set(OPTIONS[script]) | set(SHARED), script


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("quick", [[], ["--quick"]])
def test_the_defaults_parse(
    script: str, quick: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No option given: parsing and the checks before ``setup`` pass (then it would run)."""

    def setup(args: argparse.Namespace) -> None:
        raise Reached(args)

    monkeypatch.setattr(C, "setup", setup)
    with pytest.raises(Reached):
        _script(script).main([*quick, "--out", str(tmp_path)])


def test_the_training_split_has_train_images() -> None:
    """``TRAIN_IMAGES`` bounds the batch options; it is the size of ``digits()``'s split."""
    pytest.importorskip("sklearn")
    assert len(C.digits()[1]) == C.TRAIN_IMAGES


# --------------------------------------------------------------------------- paths and names
RESULTS = C.RESULTS
#: one recorded run per script that has one (deepest_hamiltonian ran on no GPU yet)
RECORDED = {
    "adjoint_accuracy_vs_depth": "adjoint_accuracy_vs_depth.json",
    "gradient_error_vs_depth": "gradient_error_vs_depth.json",
    "linear_resnet_smoothness": "linear_resnet_smoothness.json",
    "reversible_memory": "reversible_memory.json",
    "tied_to_untied": "tied_to_untied.json",
}


def _bad_files(tmp: Path) -> dict[str, Path]:
    """A missing file, a folder, text that is not JSON (or not UTF-8), JSON that is no record,
    and a record without an ``experiment`` name."""
    (tmp / "not.json").write_text("{")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "anon.json").write_text('{"rows": []}')
    (tmp / "listed.json").write_text('{"experiment": ["tied_to_untied"]}')
    (tmp / "binary.json").write_bytes(b"\xff\xfe\x00")
    return {
        "missing": tmp / "missing.json",
        "folder": tmp,
        "not JSON": tmp / "not.json",
        "not an object": tmp / "list.json",
        "no experiment key": tmp / "anon.json",
        "no experiment name": tmp / "listed.json",
        "not UTF-8": tmp / "binary.json",
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_replot_of_a_file_that_is_no_record_is_a_usage_error(
    script: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in _bad_files(tmp_path).values():
        _exits_2_naming(script, ["--replot", str(path)], "--replot", capsys)


@pytest.mark.parametrize("script", SCRIPTS)
def test_replot_of_another_experiments_record_is_a_usage_error(
    script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """e.g. the tied_to_untied record replotted by the adjoint script: a KeyError in its plot
    before; now refused by the record's ``experiment`` key, before anything is drawn."""
    other = "adjoint_accuracy_vs_depth" if script == "tied_to_untied" else "tied_to_untied"
    path = RESULTS / RECORDED[other]
    err = _exits_2_naming(script, ["--replot", str(path)], "--replot", capsys)
    assert f"experiment '{other}', not of {script}" in err


def test_replot_of_a_record_without_what_the_plot_needs_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The right experiment, but a key missing (or a list empty): exit 2 naming --replot, and
    no PNG written. Refused before matplotlib draws: this plot reads the rows first."""
    record = json.loads((RESULTS / "tied_to_untied.json").read_text())
    for change in ("seeds_detail", "empty"):
        edited = dict(record)
        if change == "empty":
            edited["seeds_detail"] = []
        else:
            del edited[change]
        path = tmp_path / f"{change}.json"
        path.write_text(json.dumps(edited))
        _exits_2_naming("tied_to_untied", ["--replot", str(path)], "--replot", capsys)
        assert not path.with_suffix(".png").exists()


@pytest.mark.parametrize(("script", "name"), RECORDED.items())
def test_every_recorded_run_passes_the_replot_check(
    script: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recorded JSON is accepted as its own script's record (nothing drawn here)."""
    drawn: list[Path] = []
    monkeypatch.setattr(C, "redraw", lambda p, option, path, draw, **_: drawn.append(path))
    record = _script(script).main(["--replot", str(RESULTS / name)])
    assert drawn == [RESULTS / name] and record["experiment"] == script


def test_replotting_a_recorded_run_still_draws_it(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    copy = tmp_path / "tied_to_untied.json"
    shutil.copyfile(RESULTS / "tied_to_untied.json", copy)
    record = _script("tied_to_untied").main(["--replot", str(copy)])
    assert record["experiment"] == "tied_to_untied"
    assert copy.with_suffix(".png").stat().st_size > 10_000


def test_replot_writes_into_out_when_given(tmp_path: Path) -> None:
    """``--replot`` drew next to the JSON whatever ``--out`` said (a shipped result's PNG was
    overwritten where a copy elsewhere was asked for)."""
    pytest.importorskip("matplotlib")
    source = tmp_path / "results" / "tied_to_untied.json"
    source.parent.mkdir()
    shutil.copyfile(RESULTS / "tied_to_untied.json", source)
    out = tmp_path / "figures" / "new"
    _script("tied_to_untied").main(["--replot", str(source), "--out", str(out)])
    assert (out / "tied_to_untied.png").stat().st_size > 10_000
    assert not source.with_suffix(".png").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_out_at_a_file_is_a_usage_error(
    script: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mkdir`` raised FileExistsError in ``setup`` (other folders that cannot be made: the
    tests of ``out_folder`` in tests/cli)."""
    (tmp_path / "afile").write_text("")
    _exits_2_naming(script, ["--no-plot", "--out", str(tmp_path / "afile")], "--out", capsys)


@pytest.mark.parametrize("script", ["deepest_hamiltonian", "reversible_memory"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "meta", "nowhere", ""])
def test_a_device_torch_cannot_use_here_is_a_usage_error(
    script: str,
    device: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--device cuda`` where torch sees no GPU (as on this CPU machine): exit 2 at parse time,
    before the output folder is made or a replot is drawn."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--device", device, "--out", str(tmp_path / "new")]
    _exits_2_naming(script, argv, "--device", capsys)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("script", ["deepest_hamiltonian", "reversible_memory"])
def test_device_cuda_parses_where_torch_sees_a_gpu(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``benchmarks/gpu.sh`` and examples/README run it (``--device cuda``)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def setup(args: argparse.Namespace) -> None:
        raise Reached(args)

    monkeypatch.setattr(C, "setup", setup)
    with pytest.raises(Reached) as reached:
        _script(script).main(["--device", "cuda", "--out", str(tmp_path)])
    assert reached.value.args[0].device == "cuda"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bad_environment_value_is_a_usage_error_naming_it(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scripts check the ``ODEDSL_*`` environment as the ``odedsl`` commands do."""
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "abc")
    _exits_2_naming(script, ["--out", str(tmp_path)], "ODEDSL_CHECK_INVERSE='abc'", capsys)
