"""What training shows: a rich progress bar per epoch, activation memory per backward mode,
and the final summary table.

Progress goes to stderr (stdout stays for the summary or ``--json``). On a terminal the bar is
live; elsewhere (logs, CI, pipes) rich prints each epoch's finished bar as one line.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor, nn

from odedsl.runtime import ApproximateGradientWarning, OdeStage, activation_bytes

if TYPE_CHECKING:
    from odedsl.training.loop import TrainResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def stages_of(model: nn.Module) -> list[OdeStage]:
    return [m for m in model.modules() if isinstance(m, OdeStage)]


def mode_label(model: nn.Module) -> str:
    """``store``/``invert``/``checkpoint(k)`` when all stages agree, else ``mixed``."""
    modes = {str(s.backward_mode) for s in stages_of(model)}
    return modes.pop() if len(modes) == 1 else ("mixed" if modes else "store")


def activation_by_mode(model: nn.Module, x: Tensor, modes: Iterable[str]) -> dict[str, int]:
    """Bytes saved for backward by one training forward on ``x``, per backward mode.

    Runs on a deep copy under a forked RNG, so the model's BatchNorm statistics and the random
    streams of training (and so an exact resume) are untouched. The run's own configuration
    comes first, labelled ``run``; modes a stage's integrator cannot run are left out.
    """
    probe = copy.deepcopy(model).train()
    out: dict[str, int] = {}
    with (
        torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []),
        warnings.catch_warnings(),  # a measurement, not a training run: its modes say nothing
    ):
        warnings.simplefilter("ignore", ApproximateGradientWarning)
        out["run"] = activation_bytes(probe, x)
        for mode in modes:
            if not stages_of(probe) or mode == mode_label(model):
                continue
            try:
                for stage in stages_of(probe):
                    stage.backward_mode = mode  # type: ignore[assignment]
            except ValueError:
                continue
            out[mode] = activation_bytes(probe, x)
    return out


class EpochBar:
    """One epoch's bar: loss, accuracy, samples/s and activation memory as fields."""

    def __init__(self, console: Console, epoch: int, epochs: int, steps: int, memory: str) -> None:
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.1%}  "
                "{task.fields[rate]:5.0f} samples/s  {task.fields[mem]}{task.fields[test]}"
            ),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            auto_refresh=console.is_terminal,
        )
        self.task = self.progress.add_task(
            "train", total=steps, loss=float("nan"), acc=0.0, rate=0.0, mem=memory, test=""
        )

    def __enter__(self) -> EpochBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, advance: int = 0, **fields: Any) -> None:
        self.progress.update(self.task, advance=advance, **fields)


def summary_table(result: TrainResult) -> Table:
    """Train/test accuracy, time, parameters and activation memory per mode."""
    table = Table(title=f"odedsl train: {result.network} on {result.data}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("train accuracy", f"{result.train_accuracy:.2%}")
    table.add_row("test accuracy", f"{result.test_accuracy:.2%}")
    table.add_row("epochs", str(len(result.history)))
    table.add_row("time", f"{result.seconds:.1f} s")
    table.add_row("parameters", f"{result.parameters:,}")
    table.add_row("device", result.device)
    batch = result.activation_batch or result.config.get("batch_size")
    for mode, nbytes in result.activation_bytes.items():
        label = f"activations, {result.mode} (this run)" if mode == "run" else f"  {mode}"
        table.add_row(f"{label}, batch {batch}", human_bytes(nbytes))
    if result.out_dir is not None:
        table.add_row("outputs", str(result.out_dir))
    return table
