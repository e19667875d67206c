"""The options of a training run and what it returns.

Defaults are chosen so that ``odedsl train specs/resnet.ode`` learns the 8×8 digits well in
well under two minutes on two CPU cores: measured 99.2% test accuracy (chance: 10%), 15 s of
CPU time, 37 s wall on a shared, busy 2-core machine (AdamW 0.01 reached 99% where SGD 0.05
stalled near 71% in the same 6 epochs; one thread avoids OpenMP spinning on busy cores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odedsl.diagnostics import Diagnostic, DslError

OPTIMIZERS = ("sgd", "adamw")
DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-2}
#: Options a resumed run must share with the run it continues (the rest may change).
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


def bad_option(message: str, hint: str | None = None, code: str = "E205") -> DslError:
    return DslError([Diagnostic(code, message, None, hint)])


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

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise bad_option(
                f"--optimizer {self.optimizer!r}: unknown optimizer",
                "expected one of: " + ", ".join(OPTIMIZERS),
                "E130",
            )
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        checks = (
            ("epochs", 1 <= self.epochs <= 1_000_000, "between 1 and 1000000"),
            (
                "batch-size",
                2 <= self.batch_size < 2**31,
                "at least 2 (BatchNorm needs two samples) and below 2^31",
            ),
            ("lr", 0 < self.lr < float("inf"), "a positive number"),
            ("weight-decay", self.weight_decay >= 0, "0 or more"),
            ("checkpoint-every", 0 <= self.checkpoint_every < 2**31, "0 or more steps"),
            ("seed", 0 <= self.seed < 2**32, "between 0 and 2^32 - 1"),
        )
        for name, ok, want in checks:
            if not ok:
                value = getattr(self, name.replace("-", "_"))
                raise bad_option(f"--{name} {value}: must be {want}")

    def resumable(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RESUME_KEYS}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available; ``cuda`` without a GPU is a clear error (exit 2)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise bad_option(
            f"--device {name!r}: unknown device", "expected cpu, cuda or cuda:N", "E130"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise bad_option(
            f"--device {name}: CUDA is not available to torch {torch.__version__}",
            "use --device cpu",
        )
    if device.type not in ("cpu", "cuda"):
        raise bad_option(f"--device {name!r}: only cpu and cuda are supported", code="E130")
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
            "epochs": self.history,
            "config": self.config,
            "params": self.params,
            "from_data": self.from_data,
            "overrides": self.overrides,
            "out": str(self.out_dir) if self.out_dir is not None else None,
        }
