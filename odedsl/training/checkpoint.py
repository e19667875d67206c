"""Training checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values (RNG states are byte tensors), so it
loads under ``torch.load(weights_only=True)``: a file carrying pickled objects is refused
instead of executed. A crash mid-write leaves the previous checkpoint intact (temp file in the
same folder, fsync, ``os.replace``).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, NonNegativeInt, TypeAdapter, ValidationError
from torch import Tensor
from typing_extensions import NotRequired, TypedDict

from odedsl.checkpoints import FORMAT as WEIGHTS_FORMAT
from odedsl.checkpoints import atomic_save as atomic_save  # re-exported: the run's files
from odedsl.checkpoints import load_plain
from odedsl.diagnostics import Diagnostic, DslError, by_face

FORMAT = 1
CHECKPOINT = "checkpoint.pt"


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every random stream training reads, as tensors (``weights_only``-loadable): the CPU
    stream and, training on a GPU, that GPU's alone (the streams of every visible GPU made a
    resume on a machine with fewer GPUs fail, and one on another index read another stream)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = [torch.cuda.get_rng_state(device)]
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Put back what :func:`rng_state` kept; ``device``: the GPU this run trains on. Older
    checkpoints kept every visible GPU's stream, by index: the device's own is taken."""
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_rng_state(cuda[index] if index < len(cuda) else cuda[0], device)


class _Plain(TypedDict):
    __pydantic_config__ = ConfigDict(arbitrary_types_allowed=True, strict=True)  # type: ignore[misc]


class _Optimizer(_Plain):
    state: dict[Any, Any]
    param_groups: list[dict[str, Any]]


class _Rng(_Plain):
    torch: Tensor
    cuda: NotRequired[list[Tensor]]


class _Config(_Plain):
    """The options a resumed run takes from its checkpoint (``TrainConfig.resumable``)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]

    data: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    momentum: float
    backward: str | None
    amp: bool
    seed: int


class _Sums(_Plain):
    """The running sums of the epoch in progress (``Trainer.sums``)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]

    loss: float
    correct: float
    seen: float
    seconds: float


class _Epoch(_Plain):
    """One finished epoch of ``Trainer.history``."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    seconds: float
    samples_per_s: float


class _Checkpoint(_Plain):
    """What ``Trainer.state`` writes; checked before any of it is used, so a damaged or
    hand-edited checkpoint is a one-line error, not a KeyError deep in the resume."""

    format: int
    model: dict[str, Tensor]
    optimizer: _Optimizer
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    epoch: NonNegativeInt
    step_in_epoch: NonNegativeInt
    global_step: NonNegativeInt
    sums: _Sums
    history: list[_Epoch]
    step_losses: Tensor
    elapsed: float
    rng: _Rng
    config: _Config
    overrides: NotRequired[dict[str, Any]]
    network: NotRequired[str]
    fingerprint: NotRequired[str]
    weights: NotRequired[dict[str, Any]]  # odedsl.checkpoints.weights_meta (checked there)


_CHECKPOINT = TypeAdapter(_Checkpoint)


def same_network(saved: str | None, current: str) -> bool | None:
    """Whether two fingerprints name the same network; ``None`` when they cannot say (a
    checkpoint from before fingerprints, or from an odedsl with another spec schema): the
    resume then relies on the network's name and its weights' keys and shapes."""
    if saved is None or saved.partition(":")[0] != current.partition(":")[0]:
        return None
    return saved == current


def _error(code: str, message: str, hint: str) -> DslError:
    return DslError([Diagnostic(code, message, None, hint)])


def damaged(source: str, where: str, what: str) -> DslError:
    """A checkpoint field that is not what ``odedsl train`` writes (E110), named."""
    return _error(
        "E110",
        f"{source} is damaged: {where}: {what}",
        "odedsl train writes checkpoint.pt itself; resume from a file it wrote, unedited",
    )


def another_out() -> str:
    """Where a new run goes instead of a folder that holds another run."""
    return by_face("another --out folder", "another folder (out=...)")


def _not_ours_hint(data: Any) -> str:
    """What a file that is not a training checkpoint of this format is, and what to do."""
    fresh = f"start a new run in {another_out()}"
    found = data.get("format") if isinstance(data, dict) else None
    if found == WEIGHTS_FORMAT:
        return (
            "it is a weights file (odedsl.save_checkpoint), without the optimizer state and "
            f"counters a resume needs: {fresh}"
        )
    if isinstance(found, int) and not isinstance(found, bool):
        return (
            f"it has checkpoint format {found}: resume it with the odedsl that wrote it, or {fresh}"
        )
    writes = by_face(
        f"odedsl train writes {CHECKPOINT} into its --out folder",
        f"train(out=DIR) writes {CHECKPOINT} into DIR",
    )
    return f"{writes}; resume such a folder, or {fresh}"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; DslError (exit 2) on anything else."""
    if not path.is_file():
        raise _error(
            "E110",
            f"{by_face('--resume', 'resume=True')}: no checkpoint at '{path}'",
            by_face(
                "resume needs the --out folder of an earlier run",
                "out must be the folder of an earlier run",
            ),
        )
    data = load_plain(path, f"checkpoint '{path}'")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _error(
            "E110",
            f"'{path}' is not an odedsl training checkpoint (format {FORMAT})",
            _not_ours_hint(data),
        )
    try:
        _CHECKPOINT.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise damaged(f"checkpoint '{path}'", where, first["msg"]) from None
    return data


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def check_state_dict(saved: Mapping[str, Any], model: Mapping[str, Any], source: str) -> None:
    """Refuse a state dict that does not fit ``model``, naming the first mismatching key."""
    same = "was it written for another spec, depth or weights rule? use the same " + by_face(
        "--set", "overrides"
    )
    for key, value in model.items():
        if key not in saved:
            raise _error(
                "E220",
                f"{source} does not match the network: key '{key}' (shape {_shape(value)}) is "
                "missing from the checkpoint",
                same,
            )
        got = saved[key]
        if not isinstance(got, Tensor) or got.shape != value.shape:
            raise _error(
                "E220",
                f"{source} does not match the network: key '{key}' has shape {_shape(got)} in "
                f"the checkpoint, {_shape(value)} in the network",
                same,
            )
    for key, value in saved.items():
        if key not in model:
            raise _error(
                "E220",
                f"{source} does not match the network: the checkpoint has key '{key}' "
                f"(shape {_shape(value)}) that the network lacks",
                same,
            )


def check_progress(ckpt: Mapping[str, Any], epochs: int, steps: int, source: str) -> None:
    """The counters must describe a point this run can reach: epoch within ``epochs``, the
    step within an epoch of ``steps`` steps, and step count, losses and history agreeing with
    them (an edited ``step_in_epoch`` of 10^6 skipped the rest of an epoch silently; an
    ``epoch`` past the end was an IndexError after training)."""
    epoch, step, total = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
    losses, history = ckpt["step_losses"], ckpt["history"]
    if epoch > epochs:
        raise damaged(source, "epoch", f"{epoch}, past the run's {epochs} epochs")
    if step > steps or (epoch == epochs and step):
        raise damaged(source, "step_in_epoch", f"{step}, in epochs of {steps} steps")
    if total != epoch * steps + step:
        raise damaged(
            source,
            "global_step",
            f"{total}, where epoch {epoch} and step {step} make {epoch * steps + step}",
        )
    if losses.dim() != 1 or losses.numel() != total:
        raise damaged(source, "step_losses", f"shape {list(losses.shape)} for {total} steps")
    if [h["epoch"] for h in history] != list(range(1, epoch + 1)):
        raise damaged(source, "history", f"epochs {[h['epoch'] for h in history]} for {epoch}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if isinstance(value, list | tuple):
        return f"list of {len(value)}"
    return type(value).__name__


def _same_kind(got: Any, want: Any, where: str, source: str) -> None:
    """``got`` (the checkpoint's) is what this run's own ``want`` is: a finite number for a
    number, a tensor of the same shape, lists of the same length, dicts checked key by key
    on the keys both have (a newer torch may add some). A string learning rate or a moment
    of another shape was a TypeError or a RuntimeError in the first step."""
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            raise damaged(source, where, f"expected a dict, got {_kind(got)}")
        for key in want.keys() & got.keys():
            _same_kind(got[key], want[key], f"{where}.{key}", source)
        return
    if isinstance(want, Tensor):
        ok = isinstance(got, Tensor) and got.shape == want.shape and got.dtype == want.dtype
        ok = ok and (not got.dtype.is_floating_point or bool(torch.isfinite(got).all()))
    elif isinstance(want, list | tuple):
        ok = isinstance(got, list | tuple) and len(got) == len(want)
        if ok:
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                _same_kind(g, w, f"{where}[{i}]", source)
    elif isinstance(want, bool) or want is None or isinstance(want, str):
        ok = type(got) is type(want)
    elif isinstance(want, int | float):
        ok = _kind(got) == "number" and abs(got) < 1e300 and math.isfinite(got)
    else:
        ok = True
    if not ok:
        raise damaged(source, where, f"expected a {_kind(want)}, got {_kind(got)} {got!r:.60}")


def check_optimizer_state(
    ckpt: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    params: list[Tensor],
    source: str,
) -> None:
    """The optimizer and scheduler states against this run's fresh ones (``optimizer``,
    ``scheduler``: their ``state_dict()``): the same parameter groups, hyperparameters of
    the same kinds, per-parameter moments of each parameter's shape, and a cosine schedule
    of this run's length at the checkpoint's step (``T_max=0`` was a ZeroDivisionError)."""
    saved = ckpt["optimizer"]
    groups, fresh_groups = saved["param_groups"], optimizer["param_groups"]
    if len(groups) != len(fresh_groups):
        raise damaged(
            source, "optimizer.param_groups", f"{len(groups)} groups, not {len(fresh_groups)}"
        )
    for i, (group, fresh) in enumerate(zip(groups, fresh_groups, strict=True)):
        if group.get("params") != fresh["params"]:
            raise damaged(source, f"optimizer.param_groups[{i}].params", "another parameter list")
        rest = {k: v for k, v in fresh.items() if k != "params"}
        _same_kind(group, rest, f"optimizer.param_groups[{i}]", source)
    for index, state in saved["state"].items():
        if not (isinstance(index, int) and 0 <= index < len(params)):
            raise damaged(source, "optimizer.state", f"a state for parameter {index!r}")
        if not isinstance(state, Mapping):
            raise damaged(source, f"optimizer.state[{index}]", f"a {_kind(state)}")
        for key, value in state.items():
            where = f"optimizer.state[{index}].{key}"
            if isinstance(value, Tensor) and value.dim():
                _same_kind(value, params[index], where, source)
            else:
                _same_kind(
                    value.item() if isinstance(value, Tensor) and value.numel() == 1 else value,
                    0.0,
                    where,
                    source,
                )
    sched = ckpt["scheduler"]
    _same_kind(sched, dict(scheduler), "scheduler", source)
    for key in ("T_max", "eta_min", "base_lrs"):
        if key in scheduler and sched.get(key) != scheduler[key]:
            raise damaged(
                source,
                f"scheduler.{key}",
                f"{sched.get(key)!r:.60}, this run's is {scheduler[key]!r:.60}",
            )
    if "last_epoch" in scheduler and sched.get("last_epoch") != ckpt["global_step"]:
        raise damaged(
            source,
            "scheduler.last_epoch",
            f"{sched.get('last_epoch')!r:.60} at step {ckpt['global_step']}",
        )
