"""Errors of training say what to do: option values, a foreign checkpoint, a diverging loss."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.checkpoints import save_checkpoint
from odedsl.diagnostics import DslError
from odedsl.training.checkpoint import CHECKPOINT, atomic_save, load_checkpoint
from odedsl.training.config import TrainConfig, resolve_device
from odedsl.training.data import synthetic
from odedsl.training.loop import Trainer


def _hint(err: pytest.ExceptionInfo[DslError]) -> str:
    (d,) = err.value.diagnostics
    assert d.hint, d.render()
    return d.hint


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"epochs": 0}, "e.g. epochs=6 (the default)"),
        ({"batch_size": 1}, "e.g. batch_size=32 (the default)"),
        ({"seed": 2**32}, "e.g. seed=0 (the default)"),
        ({"batch_size": "32"}, "e.g. batch_size=32"),
        ({"lr": -1.0}, "e.g. lr=0.01 with AdamW or 0.1 with SGD"),
        ({"lr": "fast"}, "e.g. lr=0.01"),
        ({"weight_decay": float("nan")}, "e.g. weight_decay=0.0005 (the default), or 0"),
        ({"momentum": 1.0}, "e.g. momentum=0.9 (the default)"),
        ({"optimizer": 3}, "e.g. optimizer='adamw'"),
        ({"amp": "yes"}, "e.g. amp=True"),
    ],
)
def test_an_option_error_names_a_value_that_works(options: dict, fragment: str) -> None:
    with pytest.raises(DslError) as err:
        TrainConfig(**options)
    assert fragment in _hint(err)
    # doing what the hint says works: its first example value passes
    example = _hint(err).split("e.g. ", 1)[1]
    text = example.split("=", 1)[1] if "=" in example.split()[0] else example.split()[1]
    TrainConfig(**{next(iter(options)): ast.literal_eval(text.split()[0].rstrip(";,"))})


def test_a_device_torch_knows_but_odedsl_does_not_train_on() -> None:
    with pytest.raises(DslError) as err:
        resolve_device("meta")
    assert "use device='cpu'" in _hint(err)


def test_resume_without_a_folder_names_out() -> None:
    with pytest.raises(DslError) as err:
        odedsl.training.train(SPEC, resume=True, out=None)
    assert "pass out=DIR" in _hint(err) and "out='auto'" in _hint(err)


SPEC = """\
network net(channels: int = 1, size: int = 8, classes: int = 10) {
    input image[channels, size, size]
    stem { conv2d(4, kernel=3, padding=1) }
    stage body = ode(2) {
        integrator euler
        backward BACKWARD
        residual { conv2d(4, kernel=3, padding=1) tanh }
    }
    head { adaptive_avgpool2d(1) flatten linear(classes) }
}
"""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("weights", "it is a weights file (odedsl.save_checkpoint)"),
        ("format 7", "it has checkpoint format 7: resume it with the odedsl that wrote it"),
        ("other", f"train(out=DIR) writes {CHECKPOINT} into DIR"),
    ],
)
def test_a_file_that_is_no_training_checkpoint_says_what_it_is(
    content: str, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / CHECKPOINT
    if content == "weights":
        save_checkpoint(odedsl.compile(SPEC.replace("BACKWARD", "store")), path)
    elif content == "format 7":
        atomic_save({"format": 7, "model": {}}, path)
    else:
        atomic_save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DslError, match="not an odedsl training checkpoint") as err:
        load_checkpoint(path)
    assert fragment in _hint(err)
    assert "another folder (out=...)" in _hint(err)


def _trainer(backward: str, **options: object) -> Trainer:
    data = synthetic(n_train=64, n_test=16)
    model = odedsl.compile(SPEC.replace("BACKWARD", backward))
    return Trainer(model, data.train, data.test, TrainConfig(**options), None, None)


def test_divergence_names_the_step_the_loss_and_the_lr_only_by_default() -> None:
    text = _trainer("store", optimizer="sgd", lr=0.5, weight_decay=0.0).divergence(float("nan"))
    assert text.startswith("the training loss became nan at epoch 1, step 1 (global step 1, lr ")
    assert "try a smaller lr (this run: 0.5 with sgd)" in text
    assert "weight_decay" not in text and "gradcheck" not in text and "amp=" not in text


def test_divergence_suggests_weight_decay_and_gradcheck_where_they_apply() -> None:
    trainer = _trainer("invert", optimizer="sgd", lr=2.0, weight_decay=0.25)
    text = trainer.divergence(float("inf"))
    assert "loss became inf" in text
    assert "a smaller weight_decay (lr × weight decay = 0.5" in text
    assert "stage 'body' backpropagates by inversion" in text
    assert "`odedsl gradcheck SPEC`" in text and "backward='store'" in text


# the stem's zero-initialised batch norm makes the stage input 0: every norm of the residual
# divides a constant group by sqrt(eps), and the gradient overflows while the loss is finite
CONSTANT_INPUT = """\
network net() {
    input image[1, 8, 8]
    stem { pad_channels(2) batchnorm2d(init=zeros) }
    stage body = ode(3) {
        integrator heun
        backward store
        residual { groupnorm(1) groupnorm(1) batchnorm2d }
    }
    head { adaptive_avgpool2d(1) flatten linear(10) }
}
"""


def test_a_non_finite_gradient_stops_before_the_step_and_names_the_parameters() -> None:
    """It used to reach the weights: the next loss was NaN and the message blamed the lr."""
    data = synthetic(n_train=64, n_test=16)
    trainer = Trainer(
        odedsl.compile(CONSTANT_INPUT), data.train, data.test, TrainConfig(), None, None
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x = torch.stack([data.train[i][0] for i in range(8)])
    y = torch.tensor([data.train[i][1] for i in range(8)])
    with pytest.raises(FloatingPointError) as err:
        trainer.train_step(x, y)
    text = str(err.value)
    assert text.startswith("the gradient of ") and "stem.bn1.bias" in text
    assert "at epoch 1, step 1 (global step 1), while the loss is finite (" in text
    assert 1 < float(text.split("the loss is finite (")[1].split(")")[0]) < 4  # about ln 10
    assert "the weights were not updated" in text and "1/sqrt(eps)" in text
    assert "lr" not in text.split("The usual cause")[0] and "backward='store'" not in text
    after = trainer.model.state_dict()
    changed = [
        k for k in before if k.endswith(("weight", "bias")) and not torch.equal(before[k], after[k])
    ]
    assert not changed, changed


@pytest.mark.filterwarnings("error::odedsl.runtime.ApproximateGradientWarning")
def test_measuring_each_modes_memory_warns_of_no_approximate_gradient() -> None:
    """``odedsl train specs/resnet.ode`` (backward store) warned of invert's approximate
    gradients: the summary's memory probe runs one forward in every mode."""
    from odedsl.training.report import activation_by_mode

    spec = (
        "network n(depth: int = 3) { input vector[4] stage body = ode(depth) {"
        " integrator euler backward store residual { linear(4) tanh } } head { linear(2) } }"
    )
    model = odedsl.compile(spec)
    memory = activation_by_mode(model, torch.randn(2, 4), ["store", "invert"])
    assert memory["invert"] < memory["run"]
