"""Messages of training and checkpoints name an option as the caller writes it: ``batch_size=0``
through the Python API, ``--batch-size 0`` from ``odedsl train`` (whose wording is unchanged).
The Python face used to say ``--batch-size 0`` and ``choose another --out folder`` too. Every
case fails before any data is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.cli.main import main
from odedsl.diagnostics import OVERRIDE_STYLE, DslError
from odedsl.training import train
from odedsl.training.checkpoint import CHECKPOINT, atomic_save
from odedsl.training.config import TrainConfig


def _cli(capsys: pytest.CaptureFixture[str], spec: Path, *args: str) -> str:
    """``odedsl train SPEC ARGS --quiet``: a usage error (exit 2); its stderr."""
    assert main(["train", str(spec), *args, "--quiet"]) == 2
    return capsys.readouterr().err


def _hint(err: pytest.ExceptionInfo[DslError]) -> str:
    (d,) = err.value.diagnostics
    assert d.hint
    return d.hint


def _a_run(folder: Path, overrides: dict[str, object], **config: object) -> Path:
    """A checkpoint as ``odedsl train`` writes it, at step 0 (what a resume reads first)."""
    atomic_save(
        {
            "format": 1,
            "model": {},
            "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {},
            "scaler": {},
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "sums": {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0},
            "history": [],
            "step_losses": torch.zeros(0),
            "elapsed": 0.0,
            "rng": {"torch": torch.get_rng_state()},
            "config": {**TrainConfig(data="synthetic").resumable(), **config},
            "overrides": overrides,
        },
        folder / CHECKPOINT,
    )
    return folder


def test_a_value_out_of_range(
    specs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DslError, match=r"^error: batch_size=0: must be between 2 and ") as err:
        train(specs / "resnet.ode", batch_size=0)
    assert _hint(err) == "e.g. batch_size=32 (the default)"
    # the command line refuses --batch-size 1 while parsing; a checkpoint's meets the same check
    _a_run(tmp_path, {}, batch_size=1)
    err = _cli(capsys, specs / "resnet.ode", "--out", str(tmp_path), "--resume")
    assert "is damaged: config: --batch-size 1: must be between 2 and " in err


def test_weight_decay_against_lr(
    specs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DslError, match=r"^error: weight_decay=2\.0 with lr=1\.0: lr × w") as err:
        train(specs / "resnet.ode", lr=1.0, weight_decay=2.0)
    assert _hint(err) == "a weight decay below 1/lr = 1, or a smaller lr"
    err_cli = _cli(capsys, specs / "resnet.ode", "--lr", "1", "--weight-decay", "2")
    assert "error: --weight-decay 2.0 with --lr 1.0: lr × weight decay = 2 must be" in err_cli
    assert "hint: a weight decay below 1/lr = 1, or a smaller --lr\n" in err_cli


def test_a_resume_that_changes_an_override_or_an_option(
    specs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_run(tmp_path, {"depth": 2})
    resume = {"out": tmp_path, "resume": True, "progress": False}
    with pytest.raises(DslError) as err:
        train(specs / "resnet.ode", overrides={"depth": 3}, **resume)  # type: ignore[arg-type]
    assert str(err.value).startswith(
        f"error: overrides={{'depth': 3}} differs from the checkpoint's 2 in '{tmp_path}'"
    )
    assert _hint(err) == (
        "a resumed run continues the same training: leave it out, or start a new run in "
        "another folder (out=...)"
    )
    with pytest.raises(DslError, match=r"^error: lr=0\.5 differs from the checkpoint's 0\.01 "):
        train(specs / "resnet.ode", lr=0.5, **resume)  # type: ignore[arg-type]
    with pytest.raises(
        DslError, match=r"^error: optimizer='sgd' differs from the checkpoint's 'adamw' "
    ):
        train(specs / "resnet.ode", optimizer="sgd", **resume)  # type: ignore[arg-type]

    err_cli = _cli(
        capsys, specs / "resnet.ode", "--set", "depth=3", "--out", str(tmp_path), "--resume"
    )
    assert f"error: --set depth=3 differs from the checkpoint's 2 in '{tmp_path}'" in err_cli
    assert (
        "hint: a resumed run continues the same training: drop the option, or start a new run "
        "in another --out folder\n"
    ) in err_cli
    err_cli = _cli(
        capsys, specs / "resnet.ode", "--optimizer", "sgd", "--out", str(tmp_path), "--resume"
    )
    assert "error: --optimizer sgd differs from the checkpoint's adamw in" in err_cli


def test_an_out_folder_that_holds_a_run(
    specs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / CHECKPOINT).write_bytes(b"")
    with pytest.raises(DslError) as err:
        train(specs / "resnet.ode", out=tmp_path, progress=False)
    assert str(err.value).startswith(f"error: out={str(tmp_path)!r} already holds a run")
    assert _hint(err) == "pass resume=True to continue it, or choose another folder (out=...)"
    err_cli = _cli(capsys, specs / "resnet.ode", "--out", str(tmp_path))
    assert f"error: --out '{tmp_path}' already holds a run (checkpoint.pt)" in err_cli
    assert "hint: pass --resume to continue it, or choose another --out folder\n" in err_cli


NET = """\
network net(width: int = 4) {
    input image[1, 8, 8]
    stem { conv2d(width, kernel=3, padding=1) }
    stage body = ode(2) { integrator euler residual { conv2d(width, kernel=3, padding=1) } }
    head { adaptive_avgpool2d(1) flatten linear(10) }
}
"""


def test_weights_of_another_width_name_the_parameters() -> None:
    """``odedsl.load_checkpoint`` is Python's alone: its CLI face is the command-line style's."""
    narrow, wide = odedsl.compile(NET), odedsl.compile(NET, width=8)
    with pytest.raises(DslError) as err:
        odedsl.load_checkpoint(narrow, wide.state_dict())
    assert _hint(err).endswith("load it into the spec (and parameter values) it was written for")
    style = OVERRIDE_STYLE.set("cli")
    try:
        with pytest.raises(DslError) as err:
            odedsl.load_checkpoint(narrow, wide.state_dict())
    finally:
        OVERRIDE_STYLE.reset(style)
    assert _hint(err).endswith("load it into the spec (and --set values) it was written for")
