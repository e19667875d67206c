"""The options of a training run and what it returns.

Defaults are chosen so that ``odedsl train specs/resnet.ode`` learns the 8×8 digits well in
well under two minutes on two CPU cores: measured 99.2% test accuracy (chance: 10%), 15 s of
CPU time, 37 s wall on a shared, busy 2-core machine (AdamW 0.01 reached 99% where SGD 0.05
stalled near 71% in the same 6 epochs; one thread avoids OpenMP spinning on busy cores).

torch is imported only by :func:`resolve_device`: ``odedsl train --help`` reads the option
tables here (:data:`INT_BOUNDS`, :class:`TrainConfig`'s defaults) and should not wait for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from odedsl.diagnostics import Diagnostic, DslError, by_face, option

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

OPTIMIZERS = ("sgd", "adamw")
DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-2}
#: Options a resumed run takes from its checkpoint and must keep, but for :data:`STRETCHABLE`
#: (options not listed may change).
RESUME_KEYS = (
    "data",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "momentum",
    "backward",
    "amp",
    "seed",
)

#: Options a resume may change: more epochs stretch the cosine from the step reached.
STRETCHABLE = ("epochs",)

#: The integer options and their bounds, both inclusive: ``TrainConfig`` checks them and the
#: options of ``odedsl train`` (``odedsl.cli.train_cmd``) read the same table.
INT_BOUNDS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "epochs": (1, 1_000_000),
        "batch_size": (2, 2**31 - 1),  # BatchNorm needs two samples
        # numpy's range; the batch order mixes the seed into a 64-bit integer
        "seed": (0, 2**32 - 1),
        "checkpoint_every": (0, 2**31 - 1),  # steps; 0: only at the end of each epoch
        "workers": (0, 1024),  # image-folder reading processes; 0: the training process
    }
)
_STRINGS = ("data", "optimizer", "device")
_BOOLS = ("amp", "compile")


class OptionError(DslError, ValueError):
    """A training option with a value that cannot work (a DslError: exit 2 from the CLI)."""


class OptionTypeError(DslError, TypeError):
    """A training option of the wrong type (only the Python API can pass one)."""


def bad_option(message: str, hint: str, code: str = "E205") -> OptionError:
    """An option with a value that cannot work; ``hint`` says what to pass instead."""
    return OptionError([Diagnostic(code, message, None, hint)])


def wrong_type(name: str, want: str, value: object, example: str) -> OptionTypeError:
    """An argument of the wrong type (the Python API); ``example`` is a value that works."""
    got = f"{value!r} ({type(value).__name__})"
    return OptionTypeError(
        [Diagnostic("E130", f"{name} must be {want}, got {got}", None, f"e.g. {name}={example}")]
    )


def _default(name: str) -> Any:
    """``TrainConfig``'s default of an option (the class exists by the time options are checked)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


def check_option(name: str, value: Any) -> None:
    """Type and range of one option given by name (``TrainConfig``'s fields); the checks
    that involve two options (weight decay against lr) are ``TrainConfig``'s."""
    if name in INT_BOUNDS:
        low, high = INT_BOUNDS[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong_type(name, f"an integer between {low} and {high}", value, _default(name))
        if not low <= value <= high:
            raise bad_option(
                f"{option(name, value)}: must be {_int_range(name, low, high)}",
                f"e.g. {option(name, _default(name))} (the default)",
            )
    elif name in ("lr", "weight_decay", "momentum"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise wrong_type(name, "a number (int or float)", value, f"{_number_default(name):g}")
        label = option(name, value)
        if name == "momentum":  # no --momentum option
            label = by_face(f"momentum {value}", label)
        if name == "lr" and not (_finite(value) and value > 0):
            raise bad_option(
                f"{label}: must be a finite number above 0",
                f"e.g. {option('lr', DEFAULT_LR['adamw'])} with AdamW or {DEFAULT_LR['sgd']:g} "
                "with SGD (the defaults)",
            )
        if name == "weight_decay" and not (_finite(value) and value >= 0):
            raise bad_option(
                f"{label}: must be a finite number, 0 or more",
                f"e.g. {option(name, _default(name))} (the default), or 0 for none",
            )
        if name == "momentum" and not (_finite(value) and 0 < value < 1):
            raise bad_option(
                f"{label}: must be a finite number above 0 and below 1",
                f"e.g. momentum={_default(name):g} (the default); it is SGD's Nesterov momentum, "
                "AdamW does not use it",
            )
    elif name in _STRINGS:
        if not isinstance(value, str):
            raise wrong_type(name, "a string", value, repr(_default(name)))
    elif name == "backward":
        if value is not None and not isinstance(value, str):
            raise wrong_type(name, "a string: store, invert or checkpoint(k)", value, "'invert'")
    elif name in _BOOLS:
        if not isinstance(value, bool):
            raise wrong_type(name, "True or False", value, "True")


def _number_default(name: str) -> float:
    """The default of lr (AdamW's, the default optimizer), weight_decay or momentum."""
    return DEFAULT_LR[_default("optimizer")] if name == "lr" else _default(name)


def _finite(value: float) -> bool:
    """``math.isfinite``, also for an int too large for a float (``10**400``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _int_range(name: str, low: int, high: int) -> str:
    why = " (BatchNorm needs two samples)" if name == "batch_size" else ""
    return f"between {low} and {high}{why}"


@dataclass
class TrainConfig:
    """Everything that decides a run besides the spec and its ``--set`` overrides."""

    data: str = "digits"
    epochs: int = 6
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR of the optimizer
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    device: str = "auto"
    backward: str | None = None  # None: each stage's own mode
    amp: bool = False
    compile: bool = False  # torch.compile the network (stages: one graph per residual)
    seed: int = 0
    checkpoint_every: int = 50  # steps; 0: only at the end of each epoch
    # processes reading an image folder's files (digits and synthetic data are in memory);
    # not in RESUME_KEYS: the batches are the same whatever reads them
    workers: int = 0

    def __post_init__(self) -> None:
        """TypeError (wrong type) or ValueError (out of range) naming the option; both are
        DslErrors, so the CLI reports them as usage errors (exit 2)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not (f.name == "lr" and value is None):
                check_option(f.name, value)
        if self.optimizer not in OPTIMIZERS:
            raise bad_option(
                f"{option('optimizer', self.optimizer, as_given=True)}: unknown optimizer",
                "expected one of: " + ", ".join(OPTIMIZERS),
                "E130",
            )
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        self.lr, self.weight_decay, self.momentum = (
            float(self.lr),
            float(self.weight_decay),
            float(self.momentum),
        )
        if self.lr * self.weight_decay >= 1:  # the one check of two options: name both
            raise bad_option(
                f"{option('weight_decay', self.weight_decay)} with {option('lr', self.lr)}: "
                f"lr × weight decay = {self.lr * self.weight_decay:g} must be below 1 (each "
                "step scales the weights by 1 - lr × weight decay)",
                f"a weight decay below 1/lr = {1 / self.lr:g}, or a smaller {option('lr')}",
            )

    def resumable(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RESUME_KEYS}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available; ``cuda`` without a GPU is a clear error (exit 2)."""
    import torch  # here, not at the top: the CLI's option tables import this module

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise bad_option(
            f"{option('device', name, as_given=True)}: unknown device",
            "expected cpu, cuda or cuda:N",
            "E130",
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise bad_option(
            f"{option('device', name)}: CUDA is not available to torch {torch.__version__}",
            f"use {option('device', 'cpu')}",
        )
    if device.type not in ("cpu", "cuda"):
        raise bad_option(
            f"{option('device', name, as_given=True)}: only cpu and cuda are supported",
            by_face("use --device cpu, or cuda (cuda:N)", "use device='cpu', or 'cuda' ('cuda:N')")
            + " where torch sees a GPU",
            "E130",
        )
    if device.type == "cuda" and (device.index or 0) >= (count := torch.cuda.device_count()):
        raise bad_option(
            f"{option('device', name)}: torch sees {count} CUDA device{'s' if count != 1 else ''}",
            f"use cuda:0 to cuda:{count - 1}" if count > 1 else f"use {option('device', 'cuda')}",
        )
    return device


@dataclass
class TrainResult:
    """A finished run: the trained module, its scores and where its files are."""

    model: nn.Module
    network: str
    spec: str
    data: str
    train_accuracy: float
    test_accuracy: float
    seconds: float
    parameters: int
    mode: str
    device: str
    activation_bytes: dict[str, int]
    history: list[dict[str, float]]
    step_losses: list[float]
    config: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    from_data: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    #: the batch ``activation_bytes`` was measured on: the batch size, or all the training
    #: samples when there are fewer
    activation_batch: int = 0

    def to_json(self) -> dict[str, Any]:
        """What ``odedsl train --json`` prints (everything but the module)."""
        return {
            "ok": True,
            "network": self.network,
            "spec": self.spec,
            "data": self.data,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": self.seconds,
            "parameters": self.parameters,
            "backward": self.mode,
            "device": self.device,
            "activation_bytes": self.activation_bytes,
            "activation_batch": self.activation_batch,
            "epochs": self.history,
            "config": self.config,
            "params": self.params,
            "from_data": self.from_data,
            "overrides": self.overrides,
            "out": str(self.out_dir) if self.out_dir is not None else None,
        }
