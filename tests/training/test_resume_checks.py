"""A resume continues the run its checkpoint holds, or says why not (found by a training-CLI
audit on 2026-12-02): another spec, ``--network`` or ``--set`` value used to train a different
network from the checkpoint's weights without a word, and a damaged ``config`` was blamed on
options the user never passed."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from odedsl.diagnostics import DslError
from odedsl.spec.fingerprint import network_fingerprint
from odedsl.training import train
from odedsl.training.checkpoint import (
    CHECKPOINT,
    atomic_save,
    check_optimizer_state,
    check_progress,
    load_checkpoint,
)

pytest.importorskip("sklearn")

SMALL = {"depth": 2, "width": 4}
NETWORK = """
network {name}(depth: int = 2, width: int = 4, channels: int = 1, size: int = 8) {{
    input image[channels, size, size]
    stem {{ conv2d(width, kernel=3, padding=1) }}
    stage body = ode(depth) {{
        integrator {integrator}
        residual {{ conv2d(width, kernel=3, padding=1) relu }}
    }}
    head {{ adaptive_avgpool2d(1) flatten linear(10) }}
}}
"""
#: Two networks of the same parameter shapes, Euler and Heun.
TWO = NETWORK.format(name="first", integrator="euler") + NETWORK.format(
    name="second", integrator="heun"
)


def _run(spec: Path, out: Path, **kw: object) -> None:
    train(spec, data="synthetic", epochs=1, out=out, progress=False, **kw)  # type: ignore[arg-type]


def test_another_spec_with_the_same_shapes_is_refused(specs: Path, tmp_path: Path) -> None:
    """resnet (Euler) and momentum happen to have the same parameter shapes at this size."""
    _run(specs / "resnet.ode", tmp_path, overrides={**SMALL, "stride": 1})
    with pytest.raises(DslError, match="trained network 'resnet', this spec builds 'momentum'"):
        _run(specs / "momentum.ode", tmp_path, overrides={**SMALL, "stride": 1}, resume=True)


def test_another_network_of_the_file_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "two.ode"
    spec.write_text(TWO)
    _run(spec, tmp_path / "run", network="first")
    with pytest.raises(DslError, match="trained network 'first', this spec builds 'second'"):
        _run(spec, tmp_path / "run", network="second", resume=True)


def test_an_edited_spec_is_refused_but_a_comment_is_not(tmp_path: Path) -> None:
    spec = tmp_path / "two.ode"
    spec.write_text(TWO)
    _run(spec, tmp_path / "run", network="first")
    spec.write_text("# a comment moves every line\n" + TWO)
    _run(spec, tmp_path / "run", network="first", resume=True)  # epochs done: nothing to do
    spec.write_text(TWO.replace("integrator euler", "integrator heun", 1))  # same shapes
    with pytest.raises(DslError, match=r"is not the one the checkpoint .* trained"):
        _run(spec, tmp_path / "run", network="first", resume=True)


def test_a_set_value_that_changes_the_network_is_refused(specs: Path, tmp_path: Path) -> None:
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    with pytest.raises(
        DslError,
        match=re.escape(
            "overrides={'stride': 2} differs from the checkpoint, which kept the spec's default"
        ),
    ):
        _run(specs / "resnet.ode", tmp_path, overrides={**SMALL, "stride": 2}, resume=True)
    with pytest.raises(DslError, match=re.escape("overrides={'size': 16} differs")):
        _run(specs / "resnet.ode", tmp_path, overrides={**SMALL, "size": 16}, resume=True)
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL, resume=True)  # the same: resumes


def test_a_damaged_config_names_the_checkpoint(specs: Path, tmp_path: Path) -> None:
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    ckpt["config"]["epochs"] = 0
    atomic_save(ckpt, tmp_path / CHECKPOINT)
    with pytest.raises(DslError, match=r"checkpoint '.*' is damaged: config: .*epochs"):
        train(specs / "resnet.ode", out=tmp_path, resume=True, progress=False)


def test_backward_on_resume_names_the_spec_modes(specs: Path, tmp_path: Path) -> None:
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    with pytest.raises(DslError, match="differs from the checkpoint's each stage's own mode"):
        _run(specs / "resnet.ode", tmp_path, overrides=SMALL, backward="invert", resume=True)


def test_an_out_folder_that_cannot_be_written_is_refused_before_training(
    specs: Path, tmp_path: Path
) -> None:
    """Under a file, or holding a folder where the log goes: both failed after an epoch."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(DslError, match=r"out='.*sub' cannot be written: Not a directory"):
        _run(specs / "resnet.ode", blocker / "sub", overrides=SMALL)
    (tmp_path / "run" / "log.json").mkdir(parents=True)
    with pytest.raises(DslError, match=r"holds a 'log\.json' that is not a file"):
        _run(specs / "resnet.ode", tmp_path / "run", overrides=SMALL)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_a_fingerprint_from_another_spec_schema_does_not_refuse(
    specs: Path, tmp_path: Path
) -> None:
    """An odedsl whose spec model gained or renamed a field describes the same network
    differently: such a checkpoint resumes on the name and weight checks (review)."""
    from odedsl.training.checkpoint import same_network

    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    schema, digest = ckpt["fingerprint"].split(":")
    assert same_network(f"{schema}:{digest}", ckpt["fingerprint"]) is True
    assert same_network(f"{schema}:0000", ckpt["fingerprint"]) is False
    assert same_network(None, ckpt["fingerprint"]) is None
    atomic_save({**ckpt, "fingerprint": f"0123456789abcdef:{digest[::-1]}"}, tmp_path / CHECKPOINT)
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL, resume=True)


STEPS = 4  # steps per epoch
EPOCHS = 2


def _progress(epoch: int, step: int, **change: object) -> dict:
    total = epoch * STEPS + step
    ckpt = {
        "epoch": epoch,
        "step_in_epoch": step,
        "global_step": total,
        "step_losses": torch.zeros(total, dtype=torch.float64),
        "history": [{"epoch": e} for e in range(1, epoch + 1)],
    }
    ckpt.update(change)
    return ckpt


@pytest.mark.parametrize(
    ("epoch", "step"),
    [(0, 0), (0, 3), (0, STEPS), (1, 2), (1, STEPS), (EPOCHS, 0)],
)
def test_progress_a_run_can_write_is_accepted(epoch: int, step: int) -> None:
    """(e, STEPS): --checkpoint-every dividing the epoch saves after its last step, before
    the epoch's evaluation; (EPOCHS, 0): a finished run."""
    check_progress(_progress(epoch, step), EPOCHS, STEPS, "ckpt")


@pytest.mark.parametrize(
    ("ckpt", "where"),
    [
        (_progress(EPOCHS + 1, 0), "epoch: 3, past the run's 2 epochs"),
        (_progress(EPOCHS, 1), "step_in_epoch: 1, in epochs of 4 steps"),
        (_progress(0, STEPS + 1), "step_in_epoch: 5, in epochs of 4 steps"),
        (_progress(1, 2, global_step=7), "global_step: 7, where epoch 1 and step 2 make 6"),
        (_progress(1, 2, step_losses=torch.zeros(5, dtype=torch.float64)), "step_losses"),
        (_progress(1, 2, step_losses=torch.zeros(6, 1, dtype=torch.float64)), "step_losses"),
        (_progress(1, 2, history=[]), "history: epochs [] for 1"),
        (_progress(2, 0, history=[{"epoch": 2}, {"epoch": 1}]), "history: epochs [2, 1] for 2"),
    ],
)
def test_progress_no_run_writes_is_damage(ckpt: dict, where: str) -> None:
    with pytest.raises(DslError, match="ckpt is damaged: " + where.replace("[", r"\[")):
        check_progress(ckpt, EPOCHS, STEPS, "ckpt")


def _optimizer_states() -> tuple[dict, dict, dict, list[torch.Tensor]]:
    """A checkpoint's optimizer and scheduler after one step, and a fresh run's (AdamW and
    cosine annealing, as Trainer makes them)."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(2))]
    opt = torch.optim.AdamW(params, lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    sum(p.sum() for p in params).backward()
    opt.step()
    sched.step()
    ckpt = {
        "optimizer": copy.deepcopy(opt.state_dict()),
        "scheduler": copy.deepcopy(sched.state_dict()),
        "global_step": 1,
    }
    fresh = torch.optim.AdamW(params, lr=0.01)
    fresh_sched = torch.optim.lr_scheduler.CosineAnnealingLR(fresh, T_max=8)
    return ckpt, fresh.state_dict(), fresh_sched.state_dict(), params


def test_optimizer_state_of_the_same_run_is_accepted() -> None:
    check_optimizer_state(*_optimizer_states(), "ckpt")


def _swap(ckpt: dict) -> None:
    ckpt["optimizer"]["param_groups"][0]["params"] = [1, 0]


def _past_end(ckpt: dict) -> None:
    ckpt["optimizer"]["state"][2] = ckpt["optimizer"]["state"][0]


def _not_a_dict(ckpt: dict) -> None:
    ckpt["optimizer"]["state"][1] = [0.0]


def _nan_moment(ckpt: dict) -> None:
    ckpt["optimizer"]["state"][0]["exp_avg"][0, 0] = float("nan")


def _lr_bool(ckpt: dict) -> None:
    ckpt["optimizer"]["param_groups"][0]["lr"] = True


def _eta_min(ckpt: dict) -> None:
    ckpt["scheduler"]["eta_min"] = 0.5


def _base_lrs(ckpt: dict) -> None:
    ckpt["scheduler"]["base_lrs"] = [0.02]


def _last_epoch(ckpt: dict) -> None:
    ckpt["scheduler"]["last_epoch"] = 0


@pytest.mark.parametrize(
    ("damage", "where"),
    [
        (_swap, r"optimizer\.param_groups\[0\]\.params: another parameter list"),
        (_past_end, r"optimizer\.state: a state for parameter 2"),
        (_not_a_dict, r"optimizer\.state\[1\]: a list"),
        (_nan_moment, r"optimizer\.state\[0\]\.exp_avg: expected a float32 tensor"),
        (_lr_bool, r"optimizer\.param_groups\[0\]\.lr: expected a number, got bool"),
        (_eta_min, r"scheduler\.eta_min: 0\.5, this run's is 0"),
        (_base_lrs, r"scheduler\.base_lrs: \[0\.02\], this run's is \[0\.01\]"),
        (_last_epoch, r"scheduler\.last_epoch: 0 at step 1"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_optimizer_state_no_run_writes_is_damage(damage, where: str) -> None:
    ckpt, optimizer, scheduler, params = _optimizer_states()
    damage(ckpt)
    with pytest.raises(DslError, match="ckpt is damaged: " + where):
        check_optimizer_state(ckpt, optimizer, scheduler, params, "ckpt")


class _Net(BaseModel):
    name: str
    depth: int
    origin: dict | None = None


class _NetWithAField(_Net):
    width: int = 4


def test_the_fingerprint_names_the_schema_it_describes() -> None:
    """<schema digest>:<network digest>: the same schema for two networks of one model, another
    for a model with another field (same_network then says nothing instead of 'another
    network')."""
    a, b = (
        network_fingerprint(_Net(name="a", depth=2)),
        network_fingerprint(_Net(name="b", depth=2)),
    )
    assert a.split(":")[0] == b.split(":")[0] and a != b
    assert network_fingerprint(_Net(name="a", depth=2, origin={"line": 3})) == a
    assert network_fingerprint(_NetWithAField(name="a", depth=2)).split(":")[0] != a.split(":")[0]


def test_a_resume_with_more_epochs_stretches_the_cosine_from_the_step_reached(
    tmp_path: Path,
) -> None:
    """``--epochs`` was refused on resume (the generated script allowed it): 1 epoch then 3
    goes on from step s of the 3-epoch cosine, lr = base·(1 + cos(π s / T))/2 at each epoch
    end, and fewer epochs than were done is a usage error, not a 'damaged' checkpoint."""
    import math

    spec = tmp_path / "two.ode"
    spec.write_text(TWO)
    first = train(spec, network="first", data="synthetic", epochs=1, out=tmp_path, progress=False)
    steps = len(first.step_losses)
    res = train(spec, network="first", epochs=3, out=tmp_path, resume=True, progress=False)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    lr0 = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["scheduler"]["base_lrs"][0]
    for h in res.history[1:]:
        want = lr0 * (1 + math.cos(math.pi * h["epoch"] * steps / (3 * steps))) / 2
        assert h["lr"] == pytest.approx(want, abs=1e-12)
    assert res.history[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the 1-epoch run's end
    with pytest.raises(DslError, match="epochs=2 is fewer than the 3 epochs"):
        train(spec, network="first", epochs=2, out=tmp_path, resume=True, progress=False)
