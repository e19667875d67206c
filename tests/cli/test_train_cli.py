"""`odedsl train`: a reduced run learns digits, writes its files and shows progress; a killed
run resumes to exactly the state of an uninterrupted one; bad input exits 2 without traceback."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from odedsl.cli.main import main

pytest.importorskip("sklearn")

SPECS = Path(__file__).resolve().parents[2] / "specs"
RESNET = str(SPECS / "resnet.ode")
SMALL = ["--set", "depth=2", "--set", "width=8"]
NO_VISION = importlib.util.find_spec("torchvision") is None


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "odedsl.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
    )


def _same_run(a: Path, b: Path) -> None:
    sa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    la, lb = (json.loads((p / "log.json").read_text()) for p in (a, b))
    assert la["step_losses"] == lb["step_losses"]
    assert [e["test_accuracy"] for e in la["epochs"]] == [e["test_accuracy"] for e in lb["epochs"]]


def test_reduced_digits_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", RESNET, *SMALL, "--epochs", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    assert "samples/s" in captured.err and "loss" in captured.err and "test" in captured.err
    assert "act " in captured.err  # on CPU: the run's activations ("peak" on CUDA)
    assert "test accuracy" in captured.out and "activations" in captured.out
    log = json.loads((out / "log.json").read_text())
    assert log["final"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert log["overrides"] == {"depth": 2, "width": 8} and log["spec"] == RESNET
    assert len(log["epochs"]) == 2 and log["config"]["epochs"] == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    weights = torch.load(out / "model.pt", weights_only=True)  # with layouts and fingerprint
    assert weights["format"] == "odedsl-weights" and weights["fingerprint"].startswith("w2:")
    assert weights["stages"]["body"]["depth"] == 2 and weights["state_dict"]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", RESNET, *SMALL, "--epochs", "1", "--data", "synthetic", "--quiet"]
    assert main([*args, "--json", "--out", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["data"] == "synthetic" and len(data["epochs"]) == 1
    assert set(data["activation_bytes"]) >= {"run", "invert"}


def test_a_batch_larger_than_the_data_and_workers_on_digits_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--batch-size 5000 on the 1,438 training digits: memory is measured on the 1,438, and
    the summary said "batch 5000". --workers on data held in memory is said to do nothing."""
    args = ["train", RESNET, *SMALL, "--epochs", "1", "--batch-size", "5000", "--quiet"]
    assert main([*args, "--workers", "2", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "batch 1438" in out and "batch 5000" not in out
    assert "note: --workers 2 applies to image folders; 'digits' is held in memory" in err
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["activation_batch"] == 1438 and log["config"]["batch_size"] == 5000


def test_killed_run_resumes_exactly(tmp_path: Path) -> None:
    common = ["train", RESNET, *SMALL, "--epochs", "2", "--checkpoint-every", "7", "--quiet"]
    cut, full = tmp_path / "cut", tmp_path / "full"
    # die (os._exit, no cleanup) after step 52: epoch 2, between the checkpoints of 49 and 56
    died = _cli(*common, "--out", str(cut), env={"ODEDSL_TRAIN_CRASH_AFTER": "52"})
    assert died.returncode == 75, died.stderr
    assert not (cut / "model.pt").exists()
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["global_step"] == 49
    resumed = _cli("train", RESNET, "--resume", "--out", str(cut), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert main([*common, "--out", str(full)]) == 0
    _same_run(cut, full)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path: Path) -> None:
    common = ["train", RESNET, "--set", "depth=8", "--epochs", "3", "--checkpoint-every", "5"]
    cut, full = tmp_path / "cut", tmp_path / "full"
    proc = subprocess.Popen(
        [sys.executable, "-m", "odedsl.cli.main", *common, "--out", str(cut), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = cut / "checkpoint.pt"
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= 50:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    resumed = _cli(*common, "--resume", "--out", str(cut), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert main([*common, "--out", str(full), "--quiet"]) == 0
    _same_run(cut, full)


FIXED = """network fixed(classes: int = 10) {
    input image[3, 32, 32]
    stem { conv2d(4, kernel=3, padding=1) }
    stage body = ode(2) { integrator euler residual conv2d(4, kernel=3, padding=1) }
    head { adaptive_avgpool2d(1) flatten linear(classes) }
}
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ode"], "cannot read"),
        ([RESNET, "--set", "depth"], "expected NAME=VALUE"),
        ([RESNET, "--set", "depht=3"], "did you mean 'depth'"),
        ([RESNET, "--data", "cifar11"], "neither a data set name nor a directory"),
        ([RESNET, "--epochs", "0"], "--epochs: 0 is not between 1 and"),
        ([RESNET, "--seed", str(2**64)], "--seed: 18446744073709551616 is not between"),
        ([RESNET, "--threads", "9" * 23], "--threads: 9999"),
        ([RESNET, "--backward", "sideways"], "unknown backward mode"),
        ([RESNET, "--resume", "--out", "nowhere"], "no checkpoint"),
        ([RESNET, "--device", "tpu"], "--device"),
        (["FIXED"], "[1, 8, 8]"),
        ([RESNET, "--data", "TMPDIR"], "torchvision" if NO_VISION else "not an image folder"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if args == ["FIXED"]:
        (tmp_path / "fixed.ode").write_text(FIXED)
        args = [str(tmp_path / "fixed.ode")]
    args = [str(tmp_path) if a == "TMPDIR" else a for a in args]
    if "nowhere" in args:
        args = [a if a != "nowhere" else str(tmp_path / "nowhere") for a in args]
    try:
        code = main(["train", *args, "--quiet", "--out", str(tmp_path / "o")])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_checkpoint_schema_names_every_resumed_option() -> None:
    """The schema forbids unknown options, so it must list exactly what ``resumable`` saves."""
    from odedsl.training.checkpoint import _Config
    from odedsl.training.config import RESUME_KEYS, TrainConfig

    assert set(_Config.__annotations__) == set(RESUME_KEYS) == set(TrainConfig().resumable())


def _damage(ckpt: dict, how: str) -> object:
    if how == "no config":
        del ckpt["config"]
    elif how == "extra option":
        ckpt["config"]["bogus"] = 1
    elif how == "epochs a string":
        ckpt["config"]["epochs"] = "abc"
    elif how == "empty optimizer":
        ckpt["optimizer"] = {}
    elif how == "losses a list":
        ckpt["step_losses"] = [0.5]
    elif how == "no rng":
        ckpt["rng"] = {}
    elif how == "negative epoch":
        ckpt["epoch"] = -1
    elif how == "another optimizer":
        ckpt["optimizer"]["param_groups"].append(dict(ckpt["optimizer"]["param_groups"][0]))
    # found by a training-CLI audit (2026-12-02): tracebacks after the resume had started, or
    # silent wrong runs
    elif how == "epoch past the end":
        ckpt["epoch"] = 9  # IndexError after training
    elif how == "empty history entry":
        ckpt["history"] = [{}]  # KeyError 'test_accuracy'
    elif how == "history epoch a word":
        ckpt["history"][0]["epoch"] = "one"  # accepted
    elif how == "empty sums":
        ckpt["sums"] = {}  # KeyError 'loss'
    elif how == "lr a string":
        ckpt["optimizer"]["param_groups"][0]["lr"] = "x"  # TypeError in the first step
    elif how == "lr a huge integer":
        ckpt["optimizer"]["param_groups"][0]["lr"] = 10**400  # OverflowError in the check
    elif how == "last_epoch a string":
        ckpt["scheduler"]["last_epoch"] = "x"  # TypeError
    elif how == "T_max 0":
        ckpt["scheduler"]["T_max"] = 0  # ZeroDivisionError
    elif how == "step far ahead":
        ckpt["step_in_epoch"] = 10**6  # skipped the rest of an epoch silently
    elif how == "moment of another shape":
        ckpt["optimizer"]["state"][0]["exp_avg"] = torch.zeros(1)  # RuntimeError mid-training
    elif how == "moment of another dtype":
        moment = ckpt["optimizer"]["state"][0]["exp_avg"]
        ckpt["optimizer"]["state"][0]["exp_avg"] = moment.half()
    return ckpt


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("text", "is not a PyTorch checkpoint"),
        ("one byte", "is not a PyTorch checkpoint"),
        ("no config", "is damaged: config: Field required"),
        ("extra option", "is damaged: config.bogus: Extra inputs are not permitted"),
        ("epochs a string", "is damaged: config.epochs: Input should be a valid integer"),
        ("empty optimizer", "is damaged: optimizer.state: Field required"),
        ("losses a list", "is damaged: step_losses"),
        ("no rng", "is damaged: rng.torch: Field required"),
        ("negative epoch", "is damaged: epoch: Input should be greater than or equal to 0"),
        ("another optimizer", "is damaged: optimizer.param_groups: 3 groups, not 2"),
        ("epoch past the end", "is damaged: epoch: 9, past the run's 1 epochs"),
        ("empty history entry", "is damaged: history.0.epoch: Field required"),
        ("history epoch a word", "is damaged: history.0.epoch: Input should be a valid integer"),
        ("empty sums", "is damaged: sums.loss: Field required"),
        ("lr a string", "is damaged: optimizer.param_groups[0].lr: expected a number, got str"),
        ("lr a huge integer", "is damaged: optimizer.param_groups[0].lr: expected a number"),
        ("last_epoch a string", "is damaged: scheduler.last_epoch: expected a number, got str"),
        ("T_max 0", "is damaged: scheduler.T_max: 0, this run's is"),
        ("step far ahead", "is damaged: step_in_epoch: 1000000, in epochs of"),
        ("moment of another shape", "is damaged: optimizer.state[0].exp_avg: expected a float32"),
        ("moment of another dtype", "exp_avg: expected a float32 tensor of shape [8, 1, 5, 5]"),
    ],
)
def test_a_damaged_checkpoint_exits_2_naming_what_is_wrong(
    how: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every field of a training checkpoint is checked before the resume uses it: no
    KeyError, TypeError or AttributeError from deep inside the resume."""
    out = tmp_path / "run"
    common = ["train", RESNET, *SMALL, "--epochs", "1", "--quiet", "--data", "synthetic"]
    assert main([*common, "--out", str(out), "--checkpoint-every", "5"]) == 0
    path = out / "checkpoint.pt"
    if how == "text":
        path.write_text("hello world\n")
    elif how == "one byte":
        path.write_bytes(b"a")
    else:
        torch.save(_damage(torch.load(path, weights_only=True), how), path)
    capsys.readouterr()
    assert main([*common, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_out_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It ended in torch's FileExistsError with exit status 1."""
    (tmp_path / "afile").write_text("")
    args = ["train", RESNET, *SMALL, "--epochs", "1", "--quiet", "--out", str(tmp_path / "afile")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")
def test_cuda_without_a_gpu_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", RESNET, "--device", "cuda", "--quiet"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # a refused run made an empty runs/<network>-<time>


@pytest.mark.parametrize("command", ["train", "gradcheck", "plot"])
def test_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_diverging_run_exits_1_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", RESNET, *SMALL, "--epochs", "1", "--optimizer", "sgd", "--lr", "1e9"]
    args += ["--weight-decay", "0"]  # with the default 5e-4, lr × weight decay is refused
    assert main([*args, "--quiet", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "training loss became" in err and "Traceback" not in err


@pytest.mark.slow
def test_compiled_training_matches_eager(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--compile`` (inductor; stages compile their residuals once) trains like eager."""
    base = ["train", RESNET, *SMALL, "--epochs", "1", "--data", "synthetic", "--quiet", "--json"]
    losses = []
    for extra in ([], ["--compile"]):
        assert main([*base, *extra, "--out", str(tmp_path / (extra[0] if extra else "eager"))]) == 0
        losses.append(json.loads(capsys.readouterr().out)["epochs"][0]["train_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def _train_parser_actions() -> dict[str, object]:
    from odedsl.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["train"]._actions}  # type: ignore[attr-defined]


def test_integer_options_read_the_bounds_of_train_config() -> None:
    """One table, ``INT_BOUNDS``, bounds both ``--epochs`` and ``TrainConfig(epochs=...)``."""
    from odedsl.training.config import INT_BOUNDS, TrainConfig

    actions = _train_parser_actions()
    bounded = {d for d, a in actions.items() if hasattr(getattr(a, "type", None), "bounds")}
    fields = set(TrainConfig().to_json())
    assert bounded & fields == set(INT_BOUNDS)
    for name, bounds in INT_BOUNDS.items():
        assert actions[name].type.bounds == bounds  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["epochs", "batch_size", "seed", "checkpoint_every"])
def test_each_integer_bound_is_enforced_by_the_cli(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from odedsl.cli.main import build_parser
    from odedsl.training.config import INT_BOUNDS

    low, high = INT_BOUNDS[name]
    flag = "--" + name.replace("_", "-")
    parser = build_parser()
    for good in (low, high):
        assert getattr(parser.parse_args(["train", RESNET, flag, str(good)]), name) == good
    for bad in (str(low - 1), str(high + 1), "2.5", "٣", "1e3"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["train", RESNET, flag, bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: " in err and str(low) in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weight-decay", "inf"], "--weight-decay inf: must be a finite number"),
        (["--weight-decay", "nan"], "--weight-decay nan: must be a finite number"),
        (["--weight-decay", "-1"], "--weight-decay -1.0: must be a finite number, 0 or more"),
        (["--lr", "inf"], "--lr inf: must be a finite number above 0"),
        (["--lr", "0"], "--lr 0.0: must be a finite number above 0"),
        (["--lr", "1e9"], "--weight-decay 0.0005 with --lr 1000000000.0: lr × weight decay"),
    ],
)
def test_float_options_name_themselves(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--weight-decay inf`` trained, diverged and blamed the learning rate (exit 1)."""
    code = main(["train", RESNET, *SMALL, *args, "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    if "--lr" not in args:
        assert "--lr" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--lr", "--weight-decay"])
def test_float_options_take_ascii_numbers(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from odedsl.cli.main import build_parser

    parser = build_parser()
    dest = flag[2:].replace("-", "_")
    for good, value in (("0.01", 0.01), ("1e-3", 1e-3), (".5", 0.5), ("2", 2.0), ("inf", math.inf)):
        assert getattr(parser.parse_args(["train", RESNET, flag, good]), dest) == value
    for bad in ("١.٥", "1_0", "0x10", "", "1e", "fast"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["train", RESNET, flag, bad])
        assert exit_.value.code == 2
        assert f"argument {flag}: expected a number" in capsys.readouterr().err
