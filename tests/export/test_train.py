"""The generated training script: one epoch on synthetic data in a fresh interpreter (with
``odedsl`` unimportable, from a standalone build), a checkpoint the compiled network loads,
resuming, ``--help``; and (slow) two processes under torchrun with ``--ddp``."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import odedsl

from .helpers import SPECS, import_file, run_python, write

PARAMS = {"depth": 2, "width": 4, "size": 8}
ARGS = ["--epochs", "1", "--samples", "16", "--batch-size", "8", "--out", "run"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    write(SPECS / "resnet.ode", out, standalone=True, **PARAMS)
    return out


def test_one_epoch_on_synthetic_data_then_resume(folder: Path) -> None:
    proc = run_python(["train_resnet.py", *ARGS], cwd=folder, block_odedsl=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 0: loss" in proc.stdout
    ckpt = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and {"optimizer", "schedule", "scaler"} <= set(ckpt)
    odedsl.compile(SPECS / "resnet.ode", **PARAMS).load_state_dict(ckpt["model"])
    assert not list((folder / "run").glob(".*.tmp"))  # written atomically

    first = ckpt
    resumed = [*ARGS[:1], "2", *ARGS[2:], "--resume", "run/checkpoint.pt", "--backward", "store"]
    proc = run_python(["train_resnet.py", *resumed], cwd=folder, block_odedsl=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 1: loss" in proc.stdout and "epoch 0:" not in proc.stdout
    ckpt = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    # more epochs on resume: the cosine now ends at the new last step (it used to climb back
    # up past the old one), and starts from where the new schedule is, not from the old
    # end's lr 0, where the recursion stayed: the second epoch trained nothing (audit,
    # 2026-12-02)
    assert ckpt["schedule"]["T_max"] == ckpt["schedule"]["last_epoch"] == 4  # 2 epochs × 2
    assert ckpt["schedule"]["_last_lr"][0] < 1e-6
    moved = [k for k, v in ckpt["model"].items() if k.endswith("weight")]
    assert moved and all(not torch.equal(ckpt["model"][k], first["model"][k]) for k in moved)

    done = [*ARGS[:1], "2", *ARGS[2:], "--resume", "run/checkpoint.pt"]  # nothing left to run
    proc = run_python(["train_resnet.py", *done], cwd=folder, block_odedsl=True)
    assert proc.returncode == 2 and "has run 2 epochs; ask for more with --epochs" in proc.stderr

    foreign = dict(ckpt, network="0" * 16 + ":" + "0" * 16)  # another network's digest
    torch.save(foreign, folder / "foreign.pt")
    proc = run_python(
        ["train_resnet.py", *ARGS[:1], "3", *ARGS[2:], "--resume", "foreign.pt"],
        cwd=folder,
        block_odedsl=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "a checkpoint of another network" in proc.stderr

    other = [*resumed, "--optimizer", "adamw"]  # an SGD checkpoint under another optimizer
    proc = run_python(["train_resnet.py", *other], cwd=folder, block_odedsl=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "not a checkpoint of this network and options" in proc.stderr


DROPOUT_NET = """network drop() {
    input vector[6]
    stage s = ode(3) { integrator heun residual { linear(6) tanh dropout(0.5) } }
    head { linear(3) }
}
"""


#: Runs a script and kills it (``os._exit``) right after its first checkpoint is in place.
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, runpy, sys
real = os.replace
def replace_then_die(src, dst):
    real(src, dst)
    os._exit(0)
os.replace = replace_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_resumed_run_is_the_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    """Two epochs straight, and two epochs killed after the first and resumed, end with the
    same weights, bit for bit: the data order is seeded per epoch and dropout's stream is
    restored. Before, the order came from the global generator at resume time (the first
    epoch's order again) and dropout's masks restarted from the seed (audit, 2026-12-02)."""
    (tmp_path / "drop.ode").write_text(DROPOUT_NET)
    write(tmp_path / "drop.ode", tmp_path, standalone=True)
    args = ["--epochs", "2", "--samples", "24", "--batch-size", "8", "--backward", "store"]
    args += ["--seed", "5"]
    runs = {
        "straight": [["train_drop.py", *args, "--out", "straight"]],
        "killed": [
            ["-c", KILLED_AFTER_FIRST_CHECKPOINT, "train_drop.py", *args, "--out", "killed"],
            ["train_drop.py", *args, "--out", "killed", "--resume", "killed/checkpoint.pt"],
        ],
    }
    weights = {}
    for out, commands in runs.items():
        for command in commands:
            proc = run_python(command, cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr[-3000:]
        ckpt = torch.load(tmp_path / out / "checkpoint.pt", weights_only=True)
        assert ckpt["epoch"] == 1
        weights[out] = ckpt["model"]
    assert weights["straight"].keys() == weights["killed"].keys()
    for name, value in weights["straight"].items():
        assert torch.equal(value, weights["killed"][name]), name


BAD_ARGUMENTS = [
    (["--samples", "0"], "--samples: 0 is not between 2 and"),
    (["--epochs", "-1"], "--epochs: -1 is not between 1 and"),
    (["--lr", "nan"], "--lr: nan must be a finite number"),
    (["--backward", "checkpoint(0)"], "--backward 'checkpoint(0)'"),
    (["--device", "bogus"], "--device 'bogus'"),
    (["--ddp"], "--ddp runs under torchrun"),
    (["--resume", "missing.pt"], "no such checkpoint file"),
    (["--resume", "train_resnet.py"], "cannot be read"),
    # a training-CLI audit (2026-12-02): these failed after an epoch, with a traceback
    (["--out", "train_resnet.py/sub"], "--out 'train_resnet.py/sub': cannot be written"),
    (["--data", "missing"], "--data 'missing': not a folder"),
]

#: Runs the generated script once per argument list in one interpreter (one torch import, not
#: ten: 3 s each) and prints each run's exit code and stderr as JSON; an exception other than
#: SystemExit is printed as its traceback would be.
RUN_EACH = """
import contextlib, io, json, runpy, sys, traceback
results = []
for args in json.loads(sys.argv[1]):
    sys.argv, err, code = ["train_resnet.py", *args], io.StringIO(), None
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_path("train_resnet.py", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_bad_arguments_exit_2_with_one_line(folder: Path) -> None:
    """The generated script is a command line too: a usage error, never a traceback."""
    import json

    argument_lists = [[*ARGS, *args] for args, _ in BAD_ARGUMENTS]
    proc = run_python(["-c", RUN_EACH, json.dumps(argument_lists)], cwd=folder, block_odedsl=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for (args, message), (code, stderr) in zip(BAD_ARGUMENTS, results, strict=True):
        assert code == 2, (args, stderr[-2000:])
        assert message in stderr and "Traceback" not in stderr, (args, stderr[-2000:])


@pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(folder: Path) -> None:
    proc = run_python(["train_resnet.py", *ARGS, "--device", "cuda"], cwd=folder)
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


def test_mixed_precision_off_cuda_is_said(folder: Path) -> None:
    """--amp fp16 on a CPU trains in float32; it did so without a word (audit, 2026-12-02)."""
    args = [*ARGS[:-1], "run-amp", "--amp", "fp16"]
    proc = run_python(["train_resnet.py", *args], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: --amp fp16 applies to CUDA only; training in float32" in proc.stderr


def test_help_shows_examples(folder: Path) -> None:
    proc = run_python(["train_resnet.py", "--help"], cwd=folder, block_odedsl=True)
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and "torchrun --nproc_per_node 2" in proc.stdout
    for flag in ("--data", "--ddp", "--amp", "--resume", "--optimizer"):
        assert flag in proc.stdout


def test_data_option_explains_what_it_needs(folder: Path) -> None:
    proc = run_python(["train_resnet.py", *ARGS, "--data", str(folder)], cwd=folder)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert proc.returncode != 0 and "needs torchvision" in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ddp_two_processes_with_gloo(folder: Path) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = run_python(
        [*launcher[1:], "--nproc_per_node", "2", "train_resnet.py", "--ddp", *ARGS],
        cwd=folder,
        block_odedsl=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 0: loss") == 1  # rank 0 reports
    ckpt = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)
    odedsl.compile(SPECS / "resnet.ode", **PARAMS).load_state_dict(ckpt["model"])


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_ddp_with_torch_compile(folder: Path) -> None:
    """``--ddp --compile``: DDP's graph splitting around the stage's graph break, inductor."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    args = [*ARGS[:-1], "run_compiled"]
    proc = run_python(
        [*launcher[1:], "--nproc_per_node", "2", "train_resnet.py", "--ddp", "--compile", *args],
        cwd=folder,
        block_odedsl=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 0: loss") == 1
    ckpt = torch.load(folder / "run_compiled" / "checkpoint.pt", weights_only=True)
    odedsl.compile(SPECS / "resnet.ode", **PARAMS).load_state_dict(ckpt["model"])


def test_resume_with_more_epochs_continues_the_cosine_from_the_step_reached(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script's ``resume`` in this process: a run of 2 steps (its cosine ended at lr 0)
    resumed with 6 steps goes on from step 2 of the new cosine, lr = base·(1 + cos(2π/6))/2,
    and each later step follows the closed form to 0 at step 6 (it had restarted at the base
    rate, or stayed at 0)."""
    monkeypatch.syspath_prepend(str(folder))  # the script imports its network module by name
    script = import_file(folder / "train_resnet.py")
    base = 0.1

    def fresh(steps: int) -> tuple[nn.Module, Any, Any, torch.amp.GradScaler]:
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=base)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return model, opt, schedule, torch.amp.GradScaler("cpu", enabled=False)

    model, opt, schedule, scaler = fresh(2)
    for _ in range(2):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] < 1e-12
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": 0,
        "network": script.NETWORK,
        "rng": script.rng_state(torch.device("cpu")),
    }
    torch.save(state, tmp_path / "checkpoint.pt")
    model, opt, schedule, scaler = fresh(6)
    device = torch.device("cpu")
    assert script.resume(tmp_path / "checkpoint.pt", device, model, opt, schedule, scaler) == 1
    assert schedule.T_max == 6 and schedule.last_epoch == 2
    for step in range(2, 7):
        want = base * (1 + math.cos(math.pi * step / 6)) / 2
        assert opt.param_groups[0]["lr"] == pytest.approx(want, abs=1e-12), step
        opt.step()
        schedule.step()
