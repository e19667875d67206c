"""Training checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values (RNG states are byte tensors), so it
loads under ``torch.load(weights_only=True)``: a file carrying pickled objects is refused
instead of executed. A crash mid-write leaves the previous checkpoint intact (temp file in the
same folder, fsync, ``os.replace``).
"""

from __future__ import annotations

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
from odedsl.checkpoints import load_plain
from odedsl.diagnostics import Diagnostic, DslError

FORMAT = 1
CHECKPOINT = "checkpoint.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file next to ``path``, then ``os.replace`` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def rng_state() -> dict[str, Any]:
    """Every random stream training reads, as tensors (``weights_only``-loadable)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


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
    sums: dict[str, float]
    history: list[dict[str, Any]]
    step_losses: Tensor
    elapsed: float
    rng: _Rng
    config: _Config
    overrides: NotRequired[dict[str, Any]]
    network: NotRequired[str]


_CHECKPOINT = TypeAdapter(_Checkpoint)


def _error(code: str, message: str, hint: str) -> DslError:
    return DslError([Diagnostic(code, message, None, hint)])


def _not_ours_hint(data: Any) -> str:
    """What a file that is not a training checkpoint of this format is, and what to do."""
    fresh = "start a new run in another --out folder"
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
    return (
        f"odedsl train writes {CHECKPOINT} into its --out folder; resume such a folder, or {fresh}"
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; DslError (exit 2) on anything else."""
    if not path.is_file():
        raise _error(
            "E110",
            f"--resume: no checkpoint at '{path}'",
            "resume needs the --out folder of an earlier run",
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
        raise _error(
            "E110",
            f"checkpoint '{path}' is damaged: {where}: {first['msg']}",
            "odedsl train writes checkpoint.pt itself; resume from a file it wrote, unedited",
        ) from None
    return data


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def check_state_dict(saved: Mapping[str, Any], model: Mapping[str, Any], source: str) -> None:
    """Refuse a state dict that does not fit ``model``, naming the first mismatching key."""
    for key, value in model.items():
        if key not in saved:
            raise _error(
                "E220",
                f"{source} does not match the network: key '{key}' (shape {_shape(value)}) is "
                "missing from the checkpoint",
                "was it written for another spec, depth or weights rule? use the same --set",
            )
        got = saved[key]
        if not isinstance(got, Tensor) or got.shape != value.shape:
            raise _error(
                "E220",
                f"{source} does not match the network: key '{key}' has shape {_shape(got)} in "
                f"the checkpoint, {_shape(value)} in the network",
                "was it written for another spec, depth or weights rule? use the same --set",
            )
    for key, value in saved.items():
        if key not in model:
            raise _error(
                "E220",
                f"{source} does not match the network: the checkpoint has key '{key}' "
                f"(shape {_shape(value)}) that the network lacks",
                "was it written for another spec, depth or weights rule? use the same --set",
            )
