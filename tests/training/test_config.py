"""The options of a training run, from Python: a wrong type is a TypeError naming the option,
a value out of range a ValueError naming it, both before any data is loaded; the integer
bounds are one table (``INT_BOUNDS``) that ``odedsl train``'s options read too."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from odedsl.diagnostics import DslError
from odedsl.training import train
from odedsl.training.config import INT_BOUNDS, TrainConfig


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 2.5),
        ("batch_size", 32.0),
        ("seed", 1.5),
        ("epochs", 1.5),
        ("epochs", True),
        ("seed", False),
        ("checkpoint_every", 10.0),
        ("batch_size", "32"),
        ("epochs", None),
    ],
)
def test_an_integer_option_that_is_no_int_is_a_type_error(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"{name} must be an integer") as err:
        TrainConfig(**{name: value})  # type: ignore[arg-type]
    assert repr(value) in str(err.value) and isinstance(err.value, DslError)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lr", True, "lr must be a number"),
        ("lr", "0.1", "lr must be a number"),
        ("weight_decay", False, "weight_decay must be a number"),
        ("momentum", [0.9], "momentum must be a number"),
        ("data", 3, "data must be a string"),
        ("optimizer", None, "optimizer must be a string"),
        ("device", 0, "device must be a string"),
        ("backward", ("checkpoint", 2), "backward must be a string"),
        ("amp", 1, "amp must be True or False"),
        ("compile", "yes", "compile must be True or False"),
    ],
)
def test_other_options_of_the_wrong_type_say_so(name: str, value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        TrainConfig(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(INT_BOUNDS))
def test_each_integer_bound_is_enforced(name: str) -> None:
    low, high = INT_BOUNDS[name]
    assert getattr(TrainConfig(**{name: low}), name) == low
    assert getattr(TrainConfig(**{name: high}), name) == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match=rf"{name}={bad}: must be") as err:
            TrainConfig(**{name: bad})
        assert f"{low}" in str(err.value) and isinstance(err.value, DslError)


def test_the_bounds_cover_every_integer_option() -> None:
    ints = {k for k, v in TrainConfig().to_json().items() if type(v) is int}
    assert ints == set(INT_BOUNDS)
    assert all(type(lo) is int and type(hi) is int and lo <= hi for lo, hi in INT_BOUNDS.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": math.nan}, r"lr=nan: must be a finite number above 0"),
        ({"lr": math.inf}, r"lr=inf: must be a finite number above 0"),
        ({"lr": 0}, r"lr=0: must be a finite number above 0"),
        ({"lr": 10**400}, r"lr=1000.*: must be a finite number above 0"),
        ({"lr": -0.1}, r"lr=-0\.1: must be"),
        ({"weight_decay": math.inf}, r"weight_decay=inf: must be a finite number"),
        ({"weight_decay": -math.inf}, r"weight_decay=-inf: must be a finite number"),
        ({"weight_decay": math.nan}, r"weight_decay=nan: must be a finite number"),
        ({"weight_decay": -1e-4}, r"weight_decay=-0\.0001: must be a finite number, 0 or more"),
        ({"weight_decay": 200.0, "lr": 0.01}, r"weight_decay=200\.0 with lr=0\.01: lr × "),
        (
            {"weight_decay": 1.0, "lr": 1},
            r"weight decay = 1 must be below 1 (?s:.*)below 1/lr = 1,",
        ),
        ({"momentum": math.nan}, r"momentum=nan: must be a finite number above 0 and below 1"),
        ({"momentum": 1.0}, r"momentum=1\.0: must be a finite number above 0 and below 1"),
        ({"momentum": 0}, r"momentum=0: must be"),
    ],
)
def test_float_options_out_of_range_name_the_option(kwargs: dict, message: str) -> None:
    """``--weight-decay inf`` was accepted, then reported as a diverging learning rate."""
    with pytest.raises(ValueError, match=message) as err:
        TrainConfig(**kwargs)
    assert isinstance(err.value, DslError)
    if "lr" not in kwargs:
        assert "lr=" not in str(err.value)


def test_valid_options_keep_working() -> None:
    cfg = TrainConfig(lr=1, weight_decay=0, momentum=0.5, seed=2**32 - 1, backward="invert")
    assert cfg.lr == 1.0 and type(cfg.lr) is float and type(cfg.weight_decay) is float
    assert TrainConfig(optimizer="sgd").lr == 0.1 and TrainConfig().to_json()["epochs"] == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"epochs": 1.5}, TypeError, "epochs must be an integer"),
        ({"epochs": True}, TypeError, "epochs must be an integer"),
        ({"checkpoint_every": -1}, ValueError, "checkpoint_every=-1: must be"),
        ({"weight_decay": math.inf}, ValueError, "weight_decay=inf"),
        ({"lr": "fast"}, TypeError, "lr must be a number"),
        ({"data": 7}, TypeError, "data must be a data set name or a folder"),
        ({"out": 7}, TypeError, "out must be a folder"),
        ({"resume": "yes"}, TypeError, "resume must be True or False"),
        ({"progress": None}, TypeError, "progress must be True or False"),
        ({"overrides": [("depth", 2)]}, TypeError, "overrides must be a dict"),
    ],
)
def test_the_training_api_refuses_bad_arguments_up_front(
    specs: Path, tmp_path: Path, kwargs: dict, error: type, message: str
) -> None:
    """Before any data is loaded or file written (``resume=True`` with no checkpoint yet:
    the argument is still what is reported, not the missing checkpoint)."""
    base = {"out": tmp_path / "o", "progress": False}
    with pytest.raises(error, match=message):
        train(specs / "resnet.ode", **{**base, **kwargs})
    with pytest.raises(error, match=message):
        train(specs / "resnet.ode", **{**base, "resume": True, **kwargs})
    assert not (tmp_path / "o").exists()
