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
from torch import Tensor

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


def _error(code: str, message: str, hint: str | None = None) -> DslError:
    return DslError([Diagnostic(code, message, None, hint)])


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
        raise _error("E110", f"'{path}' is not an odedsl training checkpoint (format {FORMAT})")
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
