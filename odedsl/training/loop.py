"""The training loop: SGD or AdamW, a cosine schedule, checkpoints that resume exactly.

Exact resume rests on three things: each epoch's batch order is a function of (seed, epoch)
alone, so a resumed epoch skips the batches already done; the checkpoint holds the model,
optimizer, scheduler, AMP scaler, counters, running sums and every RNG state; and nothing
outside the training steps (the memory probe, evaluation) consumes randomness differently in
a resumed run. The same seed then gives the same losses, step for step.

Testing hook: ``ODEDSL_TRAIN_CRASH_AFTER=K`` ends the process (``os._exit(75)``, no cleanup)
right after global step K, simulating a kill between checkpoints (:mod:`odedsl.training.crash`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from odedsl.checkpoints import weights_meta
from odedsl.diagnostics import Diagnostic, DslError, by_face, option
from odedsl.training.checkpoint import (
    CHECKPOINT,
    FORMAT,
    atomic_save,
    check_optimizer_state,
    check_progress,
    check_state_dict,
    rng_state,
    set_rng_state,
)
from odedsl.training.config import TrainConfig, TrainResult, resolve_device
from odedsl.training.crash import crash_after_env
from odedsl.training.data import TensorPairs, UnreadableImage
from odedsl.training.report import (
    EpochBar,
    activation_by_mode,
    human_bytes,
    mode_label,
    stages_of,
)

MODES = ("store", "checkpoint(1)", "invert")


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of epoch ``epoch``: depends on nothing but (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 1)
    return torch.randperm(n, generator=gen)


def batches(
    data: Dataset[tuple[Tensor, int]],
    order: Tensor,
    batch_size: int,
    skip: int = 0,
    *,
    keep_single: bool = False,
    workers: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of ``order`` from batch ``skip`` on; a trailing batch of one is dropped
    (BatchNorm cannot train on it) unless ``keep_single`` (evaluation, in eval mode). Data
    in memory is gathered by indexing; an image folder is read by ``workers`` processes
    (0: this one), the same batches in the same order either way."""
    chunks = [c for c in order.split(batch_size) if keep_single or len(c) > 1][skip:]
    if isinstance(data, TensorPairs):
        for c in chunks:
            yield data.batch(c)
        return
    sampler = [c.tolist() for c in chunks]
    processes = min(workers, len(sampler))  # no idle process started
    loader = DataLoader(data, batch_sampler=sampler, num_workers=processes)  # type: ignore[arg-type]
    try:
        yield from loader
    except UnreadableImage as exc:  # raised in a worker: DataLoader re-raised it as text
        raise exc.as_error() from None


def steps_per_epoch(n: int, batch_size: int) -> int:
    return len([c for c in torch.arange(n).split(batch_size) if len(c) > 1])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and norm scales (1-D tensors), the usual ResNet recipe."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset[tuple[Tensor, int]],
    device: torch.device,
    batch_size: int,
    *,
    workers: int = 0,
) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (BatchNorm running statistics)."""
    was = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    order = torch.arange(len(data))  # type: ignore[arg-type]
    for x, y in batches(data, order, max(batch_size, 256), keep_single=True, workers=workers):
        x, y = x.to(device), y.to(device)
        out = model(x).float()
        loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
    model.train(was)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


class Trainer:
    """One training run's state; :meth:`run` trains from wherever the state is."""

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset[tuple[Tensor, int]],
        test_set: Dataset[tuple[Tensor, int]],
        cfg: TrainConfig,
        out_dir: Path | None,
        console: Console | None,
    ) -> None:
        self.cfg, self.out_dir, self.console = cfg, out_dir, console
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device).train()
        # the module train steps call; state, checkpoints and evaluation use self.model
        self.step_model: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        self.train_set, self.test_set = train_set, test_set
        self.n_train = len(train_set)  # type: ignore[arg-type]
        self.steps = steps_per_epoch(self.n_train, cfg.batch_size)
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, cfg.epochs * self.steps)
        )
        amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = (
            (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
        self.history: list[dict[str, float]] = []
        self.step_losses: list[float] = []
        self.elapsed = 0.0
        self.mode = mode_label(self.model)
        self.memory: dict[str, int] = {}
        self.memory_batch = 0  # the samples memory was measured on: a batch, or all there are
        self.on_epoch_end: list[Any] = []
        self.meta: dict[str, Any] = {}  # written into checkpoints (overrides, network name)
        self.weights_meta = weights_meta(self.model)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "sums": dict(self.sums),
            "history": list(self.history),
            "step_losses": torch.tensor(self.step_losses, dtype=torch.float64),
            "elapsed": self.elapsed,
            "rng": rng_state(self.device),
            "config": self.cfg.resumable(),
            "weights": self.weights_meta,  # what odedsl.load_checkpoint checks
            **self.meta,
        }

    def save(self) -> None:
        if self.out_dir is not None:
            atomic_save(self.state(), self.out_dir / CHECKPOINT)

    def restore(self, ckpt: dict[str, Any], source: str) -> None:
        """Continue from ``ckpt`` (its structure checked by ``load_checkpoint``); what torch
        still refuses (an optimizer state of another shape) is a one-line error."""
        check_state_dict(ckpt["model"], self.model.state_dict(), source)
        check_progress(ckpt, self.cfg.epochs, self.steps, source)
        schedule = self.scheduler.state_dict()  # what the run that wrote ckpt had:
        schedule["T_max"] = max(1, ckpt["config"]["epochs"] * self.steps)  # --epochs may differ
        check_optimizer_state(
            ckpt,
            self.optimizer.state_dict(),
            schedule,
            [p for group in self.optimizer.param_groups for p in group["params"]],
            source,
        )
        try:
            self._restore(ckpt)
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
            raise DslError(
                [
                    Diagnostic(
                        "E220",
                        f"{source} does not fit this run: {exc}"[:400],
                        None,
                        "was it written for another spec, optimizer or weights rule? "
                        "resume with the options of the run that wrote it",
                    )
                ]
            ) from None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        steps = self.scheduler.T_max
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scheduler.T_max != steps:
            self._stretch_schedule(steps)
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.sums = {k: float(v) for k, v in ckpt["sums"].items()}
        self.history = [dict(h) for h in ckpt["history"]]
        self.step_losses = [float(v) for v in ckpt["step_losses"].tolist()]
        self.elapsed = float(ckpt["elapsed"])
        set_rng_state(ckpt["rng"], self.device)

    def _stretch_schedule(self, steps: int) -> None:
        """A resume with another ``--epochs``: the cosine from the step reached to the new
        end, in closed form (the chainable update would go on from the old curve's lr)."""
        sched = self.scheduler
        sched.T_max = steps
        now = min(sched.last_epoch, steps)
        cosine = (1 + math.cos(math.pi * now / steps)) / 2
        for group, base in zip(self.optimizer.param_groups, sched.base_lrs, strict=True):
            group["lr"] = sched.eta_min + (base - sched.eta_min) * cosine
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ training
    def measure_memory(self) -> None:
        """Activation bytes per mode on the first batch of epoch 0 (no RNG consumed)."""
        x, _ = next(
            batches(
                self.train_set, epoch_order(self.n_train, self.cfg.seed, 0), self.cfg.batch_size
            )
        )
        self.memory_batch = len(x)
        with self._autocast():
            self.memory = activation_by_mode(self.model, x.to(self.device), MODES)

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def train_step(self, x: Tensor, y: Tensor) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.step_model(x)
            loss = F.cross_entropy(out.float(), y)
        self.scaler.scale(loss).backward()
        if not self.scaler.is_enabled():  # the float16 scaler skips such steps by itself
            value, norm = torch.stack([loss.detach().float(), self._gradient_norm()]).tolist()
            if math.isfinite(value) and not math.isfinite(norm):
                raise FloatingPointError(self.gradient_overflow(value))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        value = float(loss.detach())
        if value != value or value in (float("inf"), float("-inf")):
            raise FloatingPointError(self.divergence(value))
        return value, int((out.detach().argmax(1) == y).sum())

    def _gradient_norm(self) -> Tensor:
        """The norm of every gradient together, in float32 or wider: inf or NaN when one is
        (checked with the loss, in one synchronisation, before the optimizer uses them)."""
        wide = (torch.float32, torch.float64)  # a 16-bit norm overflows at 65504
        grads = [
            p.grad if p.grad.dtype in wide else p.grad.float()
            for p in self.model.parameters()
            if p.grad is not None
        ]
        if not grads:
            return torch.zeros((), device=self.device)
        # one kernel per dtype and device (torch >= 2.4 has it), not one per tensor
        return torch.stack(torch._foreach_norm(grads)).norm()

    def gradient_overflow(self, loss: float) -> str:
        """Stops before a non-finite gradient reaches the weights (it would make every later
        loss NaN, and the message then blamed the learning rate): which parameters, and the
        usual cause when the loss is finite."""
        bad = [
            name
            for name, p in self.model.named_parameters()
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        names = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        where = f"of {names}" if bad else "(its norm overflowed float32)"
        text = (
            f"the gradient {where} is not finite at epoch {self.epoch + 1}, step "
            f"{self.step_in_epoch + 1} (global step {self.global_step + 1}), while the loss "
            f"is finite ({loss:.4g}); the weights were not updated. The usual cause is a "
            "normalisation of a group that is constant (variance below its eps: zero-padded "
            "channels, a zero-initialised layer before a norm): its backward multiplies by "
            "1/sqrt(eps) at every such layer, and a deep stage overflows"
        )
        if any(str(s.backward_mode) != "store" for s in stages_of(self.model)):
            text += (
                f"; if {option('backward', 'store')} stops here too, the cause is the network "
                "at these weights, not the recomputation"
            )
        return text

    def divergence(self, value: float) -> str:
        """What is known when the loss stops being finite, and what to try: a smaller lr
        always; weight decay, the inverse's gradients and float16 only where this run has them."""
        cfg = self.cfg
        lr = float(self.scheduler.get_last_lr()[0])
        text = (
            f"the training loss became {value} at epoch {self.epoch + 1}, step "
            f"{self.step_in_epoch + 1} (global step {self.global_step + 1}, lr {lr:.3g})"
        )
        tips = [f"try a smaller {option('lr')} (this run: {cfg.lr:g} with {cfg.optimizer})"]
        shrink = cfg.lr * cfg.weight_decay
        if shrink >= 0.1:
            tips.append(
                f"a smaller {option('weight_decay')} (lr × weight decay = {shrink:.3g}: each "
                "step scales the weights by 1 - lr × weight decay)"
            )
        inverted = [s.name for s in stages_of(self.model) if str(s.backward_mode) == "invert"]
        if inverted:
            names = ", ".join(f"'{n}'" for n in inverted[:4])
            names += ", ..." if len(inverted) > 4 else ""
            which = (
                f"stage {names} backpropagates"
                if len(inverted) == 1
                else f"stages {names} backpropagate"
            )
            tips.append(
                f"{which} by inversion, whose gradients come from "
                "reconstructed states: compare them with store's using `odedsl gradcheck SPEC` "
                f"(with the same --set values), or train with {option('backward', 'store')}"
            )
        if self.amp_dtype == torch.float16:
            tips.append(
                f"{option('amp', True)} computes in float16 here (largest value 65504): "
                + by_face("try without --amp", "try amp=False")
            )
        return text + "; " + "; ".join(tips)

    def run_epoch(self) -> None:
        cfg = self.cfg
        order = epoch_order(self.n_train, cfg.seed, self.epoch)
        crash_after = crash_after_env()
        if self.device.type == "cuda":  # this epoch's peak, not the memory probe's before it
            torch.cuda.reset_peak_memory_stats(self.device)
        mem = self._memory_text()
        bar = (
            EpochBar(self.console, self.epoch, cfg.epochs, self.steps, mem)
            if self.console
            else None
        )
        with bar or nullcontext():
            if bar:
                bar.update(advance=self.step_in_epoch)
            read = batches(
                self.train_set, order, cfg.batch_size, self.step_in_epoch, workers=cfg.workers
            )
            for x, y in read:
                start = time.perf_counter()
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                loss, correct = self.train_step(x, y)
                self.step_in_epoch += 1
                self.global_step += 1
                self.step_losses.append(loss)
                dt = time.perf_counter() - start
                self.elapsed += dt
                s = self.sums
                s["loss"] += loss * len(y)
                s["correct"] += correct
                s["seen"] += len(y)
                s["seconds"] += dt
                if bar:
                    bar.update(
                        advance=1,
                        loss=s["loss"] / s["seen"],
                        acc=s["correct"] / s["seen"],
                        rate=s["seen"] / max(s["seconds"], 1e-9),
                        mem=self._memory_text(),
                    )
                if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                    self.save()
                if crash_after and self.global_step == crash_after:
                    os._exit(75)  # the testing hook: die as a kill would, between checkpoints
            start = time.perf_counter()
            test_loss, test_acc = evaluate(
                self.model, self.test_set, self.device, cfg.batch_size, workers=cfg.workers
            )
            self.elapsed += time.perf_counter() - start
            if bar:
                bar.update(test=f"  test {test_acc:6.1%}")
        s = self.sums
        self.history.append(
            {
                "epoch": self.epoch + 1,
                "train_loss": s["loss"] / max(s["seen"], 1),
                "train_accuracy": s["correct"] / max(s["seen"], 1),
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "lr": float(self.scheduler.get_last_lr()[0]),
                "seconds": s["seconds"],
                "samples_per_s": s["seen"] / max(s["seconds"], 1e-9),
            }
        )
        self.epoch += 1
        self.step_in_epoch = 0
        self.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
        self.save()
        for hook in self.on_epoch_end:
            hook(self)

    def _memory_text(self) -> str:
        """On CPU the activations this run's modes keep (saved-tensor bytes, measured once); on
        CUDA the allocator's peak since the epoch began: weights, optimizer state and
        workspace included, so it is called "peak", not "act"."""
        if self.device.type == "cuda":
            return "peak " + human_bytes(torch.cuda.max_memory_allocated(self.device))
        return "act " + human_bytes(self.memory.get("run", 0))

    def run(self) -> None:
        while self.epoch < self.cfg.epochs:
            self.run_epoch()


__all__ = ["TrainConfig", "TrainResult", "Trainer", "batches", "epoch_order", "evaluate"]
