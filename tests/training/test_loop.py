"""The training loop from Python: it learns, writes its files, resumes exactly, and refuses
checkpoints that do not fit or carry pickled objects."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.checkpoints import load_checkpoint as load_weights
from odedsl.diagnostics import DslError
from odedsl.training import train
from odedsl.training.checkpoint import CHECKPOINT, atomic_save, load_checkpoint
from odedsl.training.loop import Trainer, batches, epoch_order, evaluate

pytest.importorskip("sklearn")

SMALL = {"depth": 2, "width": 8}


def test_digits_learns_and_writes_its_files(specs: Path, tmp_path: Path) -> None:
    result = train(specs / "resnet.ode", epochs=2, overrides=SMALL, out=tmp_path, progress=False)
    assert result.test_accuracy > 0.5 and result.train_accuracy > 0.5  # chance: 0.1
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.activation_bytes["run"] > result.activation_bytes["invert"] > 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["complete"] and log["final"]["test_accuracy"] == result.test_accuracy
    assert log["seed"] == 0 and log["torch"] == torch.__version__
    assert log["from_data"] == {"channels": 1, "size": 8, "classes": 10, "stride": 1}
    assert len(log["step_losses"]) == 2 * 45
    saved = torch.load(tmp_path / "model.pt", weights_only=True)  # a weights file: the state
    assert saved["state_dict"].keys() == result.model.state_dict().keys()  # dict, the layouts
    assert saved["fingerprint"] == result.model.weights_fingerprint  # and the network's digest
    # which load_checkpoint compares with the network's (it warns on a plain state dict file)
    net = odedsl.compile(specs / "resnet.ode", **SMALL, **result.from_data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(net, tmp_path / "model.pt")
    trained = result.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in net.state_dict().items())
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file


class _Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(
    specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = {"epochs": 2, "checkpoint_every": 7, "overrides": SMALL, "progress": False}
    full = train(specs / "resnet.ode", out=tmp_path / "full", **opts)

    original = Trainer.train_step
    calls = {"n": 0}

    def crashing(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        calls["n"] += 1
        if calls["n"] == 52:  # epoch 2, between the checkpoints of steps 49 and 56
            raise _Crash
        return original(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(_Crash):
        train(specs / "resnet.ode", out=tmp_path / "cut", **opts)
    monkeypatch.setattr(Trainer, "train_step", original)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["global_step"] == 49
    resumed = train(specs / "resnet.ode", out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.step_losses == full.step_losses
    assert resumed.history == [
        {**h, "seconds": r["seconds"], "samples_per_s": r["samples_per_s"]}
        for h, r in zip(full.history, resumed.history, strict=True)
    ]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_depth_is_refused_naming_the_key(specs: Path, tmp_path: Path) -> None:
    train(specs / "resnet.ode", epochs=1, overrides=SMALL, out=tmp_path, progress=False)
    for name, value, was in (("depth", 3, 2), ("width", 4, 8)):  # refused before any loading
        with pytest.raises(
            DslError,
            match=re.escape(f"overrides={{'{name}': {value}}} differs from the checkpoint's {was}"),
        ):
            train(
                specs / "resnet.ode",
                overrides={name: value},
                out=tmp_path,
                resume=True,
                progress=False,
            )
    # a checkpoint without the network's fingerprint (written before it was recorded) whose
    # overrides say depth 3: the weights are compared key by key
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    del ckpt["fingerprint"]
    atomic_save({**ckpt, "overrides": {**SMALL, "depth": 3}}, tmp_path / CHECKPOINT)
    with pytest.raises(DslError) as err:
        train(specs / "resnet.ode", out=tmp_path, resume=True, progress=False)
    assert "'body.f.2." in str(err.value) and "missing from the checkpoint" in str(err.value)
    atomic_save({**ckpt, "overrides": {**SMALL, "width": 4}}, tmp_path / CHECKPOINT)
    with pytest.raises(DslError) as err:
        train(specs / "resnet.ode", out=tmp_path, resume=True, progress=False)
    assert "shape [8, 1, 5, 5] in the checkpoint, [4, 1, 5, 5] in the network" in str(err.value)
    atomic_save(ckpt, tmp_path / CHECKPOINT)
    with pytest.raises(DslError, match="already holds a run"):
        train(specs / "resnet.ode", epochs=1, overrides=SMALL, out=tmp_path, progress=False)
    with pytest.raises(DslError, match=r"lr=0\.5 differs from the checkpoint's 0\.01"):
        train(specs / "resnet.ode", lr=0.5, out=tmp_path, resume=True, progress=False)


class Payload:
    """Not a tensor: weights_only loading must refuse to build it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    with open(path, "wb") as fh:
        torch.save({"format": 1, "model": {}, "evil": Payload()}, fh, pickle_module=pickle)
    with pytest.raises(DslError, match="pickled objects"):
        load_checkpoint(path)


def test_missing_checkpoint_and_foreign_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DslError, match="no checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT)
    atomic_save({"weights": torch.zeros(2)}, tmp_path / CHECKPOINT)
    with pytest.raises(DslError, match="not an odedsl training checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT)


def test_batch_order_depends_on_seed_and_epoch_only() -> None:
    assert torch.equal(epoch_order(100, 3, 1), epoch_order(100, 3, 1))
    assert not torch.equal(epoch_order(100, 3, 1), epoch_order(100, 3, 2))
    from odedsl.training.data import synthetic

    data = synthetic().train
    order = epoch_order(len(data), 0, 0)
    whole = list(batches(data, order, 32))
    rest = list(batches(data, order, 32, skip=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole[3:], rest, strict=True))


def test_evaluation_counts_a_trailing_single_sample() -> None:
    """Evaluation batched as training does, dropping a last batch of one: a test set of one
    image (an image folder's test/ may hold one) scored 0, one of 257 left an image out."""
    from odedsl.training.data import TensorPairs

    model = torch.nn.Linear(2, 2, bias=False)
    torch.nn.init.eye_(model.weight)  # predicts the larger coordinate's index
    x = torch.tensor([[1.0, 0.0]]).repeat(257, 1)
    y = torch.zeros(257, dtype=torch.int64)
    y[-1] = 1  # the last one is wrong
    cpu = torch.device("cpu")
    assert evaluate(model, TensorPairs(x[:1], y[:1]), cpu, 8)[1] == 1.0
    assert evaluate(model, TensorPairs(x, y), cpu, 8)[1] == 256 / 257
