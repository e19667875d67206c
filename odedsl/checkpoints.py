"""Model weights in and out of files, checked against the network, and converted between
weight schedules and depths.

* :func:`save_checkpoint` writes the state dict together with each ODE stage's layout
  (integrator, depth, weights rule), all plain values and tensors;
* :func:`load_checkpoint` reads a file with ``torch.load(weights_only=True)`` (a pickle that
  would run code is refused, never executed) or takes a state dict, and refuses one written for
  another network, weights rule or (for untied weights, one slot per layer) depth, naming the
  first mismatching key and its shapes and suggesting :func:`convert_state_dict` where a
  conversion exists;
* :func:`convert_state_dict` maps a stage's weights from one schedule/depth to another by
  evaluating θ(s) at the destination's slots (:func:`odedsl.runtime.weights.expand_state_dict`):
  tied → untied, shallower → deeper untied, interpolated → untied (seed 000 §5.2: start a deep
  untied network from a trained tied one).

A plain ``model.state_dict()`` (no layout) is checked by keys and shapes only: an
``interpolated(4)`` and an ``untied`` depth-4 stage have the same shapes, and only a file
written by :func:`save_checkpoint` (or ``odedsl train``'s ``model.pt``) tells them apart, by the
stage layouts and the network's weights fingerprint (:mod:`odedsl.spec.fingerprint`) it
carries. Loading a plain state dict from a file therefore warns that the network was not
checked.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from odedsl.diagnostics import Diagnostic, DslError, by_face
from odedsl.runtime.stage import is_ode_stage
from odedsl.runtime.weights import WeightSchedule, _check_conversion, _inexact, expand_state_dict

FORMAT = "odedsl-weights"
VERSION = 1
CONVERT_HINT = (
    "convert it with odedsl.checkpoints.convert_state_dict(source_spec_or_model, state_dict, "
    "model) (tied → untied, shallower → deeper, interpolated → untied)"
)


class CheckpointError(DslError):
    """A checkpoint that cannot be read, or does not fit the network.

    ``key``, ``expected`` and ``found`` name the first mismatching entry when there is one
    (shapes as tuples, ``None`` for a missing key).
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        code: str = "E220",
        key: str | None = None,
        expected: tuple[int, ...] | None = None,
        found: tuple[int, ...] | None = None,
    ) -> None:
        self.key, self.expected, self.found = key, expected, found
        super().__init__([Diagnostic(code, message, None, hint)])


@dataclass(frozen=True)
class StageLayout:
    """What the weights of one stage mean: their schedule in depth and the program reading them."""

    integrator: str
    depth: int
    schedule: WeightSchedule
    residuals: tuple[str, ...]
    offsets: tuple[float, ...]

    @property
    def slots(self) -> int:
        return self.schedule.slots(self.depth, self.offsets)

    def describe(self) -> str:
        return f"{self.integrator}, weights {self.schedule}, depth {self.depth}"

    def holds_weights_for(self, other: StageLayout) -> bool:
        """Whether weights written for this layout load into ``other`` unchanged: the same
        layout, or the same but for the depth when ``other``'s schedule does not depend on it
        (tied, interpolated(k), shared(k) with k ≤ depth: what ``set_depth`` runs at any
        depth; an interpolated(3) file of depth 4 had been refused at depth 8)."""
        if self == other:
            return True
        mode, k = other.schedule.mode, other.schedule.k
        free = mode in ("tied", "interpolated") or (
            mode == "shared" and k is not None and k <= other.depth
        )
        return free and replace(self, depth=other.depth) == other

    def to_plain(self) -> dict[str, Any]:
        return {
            "integrator": self.integrator,
            "depth": self.depth,
            "weights": self.schedule.mode,
            "k": self.schedule.k,
            "residuals": list(self.residuals),
            "offsets": [float(c) for c in self.offsets],
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> StageLayout:
        return cls(
            str(data["integrator"]),
            int(data["depth"]),
            WeightSchedule(data["weights"], data["k"]),
            tuple(str(r) for r in data["residuals"]),
            tuple(float(c) for c in data["offsets"]),
        )


def stage_layouts(source: nn.Module | Any, **params: Any) -> dict[str, StageLayout]:
    """Module path → layout of every ODE stage of a model, or of a spec (path, text or
    validated spec, with parameter overrides) compiled the way ``odedsl.compile`` would."""
    if isinstance(source, nn.Module):
        return {
            path: StageLayout(
                m.program.name,
                m.depth,
                # a standalone build's stage holds its own copy of the class
                WeightSchedule(m.schedule.mode, m.schedule.k),
                tuple(m.program.residuals),
                tuple(m.program.offsets),
            )
            for path, m in source.named_modules()
            if is_ode_stage(m)
        }
    from odedsl.spec.load import load_spec

    spec = load_spec(source, **params)
    out: dict[str, StageLayout] = {}
    for stage in spec.network.stages:
        integrator = spec.integrators[stage.integrator]
        program = integrator.program(stage.integrator_params)
        out[stage.name] = StageLayout(
            stage.integrator,
            stage.depth,
            WeightSchedule(stage.weights, stage.weights_k),
            tuple(program.residuals),
            tuple(program.offsets),
        )
    return out


# ---------------------------------------------------------------------------- files
def weights_meta(model: nn.Module) -> dict[str, Any]:
    """What a weights file says of the network it was written for (its stages' layouts and
    weights fingerprint, plain values only); a training checkpoint carries it as ``weights``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "network": getattr(model, "network_name", None),
        "fingerprint": getattr(model, "weights_fingerprint", None),
        "stages": {p: s.to_plain() for p, s in stage_layouts(model).items()},
    }


def weights_file(model: nn.Module) -> dict[str, Any]:
    """What :func:`save_checkpoint` writes (``odedsl train``'s ``model.pt`` too): the state
    dict with :func:`weights_meta`, plain values and tensors only, so that
    :func:`load_checkpoint` can tell the network it was written for."""
    return {**weights_meta(model), "state_dict": model.state_dict()}


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s weights, its stages' layouts and its weights fingerprint (loadable
    with ``weights_only``), atomically (:func:`atomic_save`: a save interrupted mid-write
    leaves the file it would replace whole) and making missing folders on the way."""
    if Path(path).is_dir():
        raise CheckpointError(
            f"cannot write a checkpoint to '{path}': it is a folder",
            "name a file, e.g. model.pt",
            code="E110",
        )
    try:
        atomic_save(weights_file(model), Path(path))
    except OSError as exc:  # a folder on the way that is a file, no permission, a full disk
        raise CheckpointError(
            f"cannot write a checkpoint to '{path}': {exc.strerror or exc}",
            "choose a path in a folder this user can write",
            code="E110",
        ) from None


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file next to ``path``, then ``os.replace`` (atomic on POSIX);
    the folders on the way are made."""
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


def _refusal_reason(text: str) -> str:
    """The line of torch's weights_only refusal that says what was refused (torch prefixes
    it with paragraphs about the ``weights_only`` default)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text)
    # newer torch: no prefix, and a first paragraph that suggests weights_only=False, which
    # would run the file's code: never quote it, quote the line naming what was refused
    found = found or re.search(r"^\s*(.*unsupported.*?)\.?\s*$", text, re.M | re.I)
    reason = found.group(1) if found else "an object weights_only loading does not allow"
    return reason.strip()[:200]


def load_plain(path: Path, where: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; every failure a located :class:`CheckpointError`
    (E110) that says which of three things went wrong: the file cannot be read (missing,
    truncated, corrupt archive), it is a torch file carrying pickled objects (refused, never
    run), or it is not a torch file at all (``torch.save`` writes a zip archive)."""
    if path.exists() and not path.is_file():  # a folder, a device (/dev/zero), a FIFO
        raise CheckpointError(
            f"{where} is not a regular file",
            "name the checkpoint file itself (e.g. model.pt), not a folder or a device",
            code="E110",
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = _refusal_reason(str(exc))
        if zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{where} carries pickled objects that weights_only loading refuses ({first})",
                "only load checkpoints you trust; odedsl writes tensors and plain values only",
                code="E110",
            ) from None
        raise CheckpointError(
            f"{where} is not a PyTorch checkpoint: not the zip archive torch.save writes, and "
            f"not a plain weights pickle either ({first})",
            "pass the file torch.save (or odedsl) wrote; only load files you trust",
            code="E110",
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {where}: {str(exc) or type(exc).__name__}"[:400],
            _unreadable_hint(path, exc),
            code="E110",
        ) from None
    except Exception as exc:  # torch's weights-only unpickler on bytes that are no pickle
        raise CheckpointError(
            f"{where} is not a PyTorch checkpoint (its bytes are not a pickle torch can read: "
            f"{type(exc).__name__} {exc})"[:400],
            "pass the file torch.save (or odedsl) wrote",
            code="E110",
        ) from None


def _unreadable_hint(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` could not read ``path``: no file, no permission, or damaged bytes."""
    if not path.exists():
        return f"no file at that path; relative paths start at the current folder ({Path.cwd()})"
    if isinstance(exc, PermissionError):
        return "the file is not readable by this user: change its permissions or copy it"
    if "deserialize object on" in str(exc):  # map_location names a device this machine lacks
        return "load it onto a device this machine has, e.g. map_location='cpu'"
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty: write it again with odedsl.save_checkpoint or torch.save"
    return (
        "the file is truncated or damaged (an interrupted write or copy?): write it again with "
        "odedsl.save_checkpoint or torch.save"
    )


@dataclass(frozen=True)
class _Read:
    """A checkpoint as read: its state dict, and what the file says it was written for."""

    state: dict[str, Tensor]
    layouts: dict[str, StageLayout] | None
    fingerprint: str | None = None
    network: str | None = None


def read_checkpoint(
    source: str | os.PathLike[str] | Mapping[str, Any], map_location: Any = "cpu"
) -> tuple[dict[str, Tensor], dict[str, StageLayout] | None]:
    """The state dict and (when the file has them) the stage layouts of a checkpoint.

    Files are read with ``weights_only=True``: tensors and plain containers only, so a file
    carrying a pickled object that would run code is refused before anything runs.
    """
    read = _read(source, map_location)
    return read.state, read.layouts


def _read(source: str | os.PathLike[str] | Mapping[str, Any], map_location: Any) -> _Read:
    """:func:`read_checkpoint`, with the weights fingerprint and network name a weights file
    carries (``None`` where it has none)."""
    if isinstance(source, Mapping):
        data: Any = source
        where = "the state dict"
    else:
        path = Path(source)
        where = f"'{path}'"
        data = load_plain(path, where, map_location)
    meta: Any = None
    if isinstance(data, Mapping) and data.get("format") == FORMAT:
        meta, data = data, data.get("state_dict")  # a weights file
    elif isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        meta, data = data.get("weights"), data["model"]  # an odedsl training checkpoint
    layouts, fingerprint, network = None, None, None
    if meta is not None:
        try:
            layouts = {str(p): StageLayout.from_plain(s) for p, s in meta["stages"].items()}
            fingerprint, network = meta.get("fingerprint"), meta.get("network")
            for key, value in (("fingerprint", fingerprint), ("network", network)):
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"{key} is a {type(value).__name__}, not a string")
            if data is None:
                raise KeyError("state_dict")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{where} is an odedsl weights file whose stage layouts are damaged "
                f"({type(exc).__name__}: {exc})"[:400],
                "odedsl.save_checkpoint and odedsl train write these files; load one they "
                "wrote, unedited",
                code="E110",
            ) from None
    if not _is_state_dict(data):
        raise CheckpointError(
            f"{where} is not a state dict (names → tensors)",
            _not_a_state_dict_hint(data),
            code="E110",
        )
    return _Read(dict(data), layouts, fingerprint, network)


def _is_state_dict(data: Any) -> bool:
    """Names mapped to tensors (an empty mapping included)."""
    return isinstance(data, Mapping) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    )


def _not_a_state_dict_hint(data: Any) -> str:
    """Point at a nested state dict when there is one (``{"state_dict": ...}``, as other
    trainers write), else say what a state dict is."""
    if isinstance(data, Mapping):
        nested = [k for k, v in data.items() if isinstance(k, str) and _is_state_dict(v) and len(v)]
        if nested:
            return (
                f"it holds {', '.join(repr(k) for k in nested[:3])}: pass the state dict inside, "
                f"e.g. checkpoint[{nested[0]!r}]"
            )
    return (
        "pass what odedsl.save_checkpoint(model, path) or torch.save(model.state_dict(), path) "
        "writes: parameter names mapped to tensors"
    )


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    map_location: Any = "cpu",
) -> nn.Module:
    """Load weights into ``model`` after checking they were written for this very network.

    Refused (:class:`CheckpointError`, a ``DslError``): an unsafe or unreadable file, a stage
    layout (integrator, depth, weights rule) other than the model's, a missing or extra key,
    a shape other than the model's, a file written for another network (its weights
    fingerprint, when both the file and the model have one). The depth may differ for weights
    that do not depend on it (tied, interpolated(k), shared(k) with k ≤ the model's depth), as
    with ``set_depth``. The message names the first mismatching key and both shapes, and
    suggests :func:`convert_state_dict` when the stage layouts differ. A file holding a plain
    state dict loads with a ``UserWarning``: nothing in it says which network it was written
    for (an in-memory state dict, e.g. :func:`convert_state_dict`'s, does not warn).
    """
    read = _read(source, map_location)
    mine = stage_layouts(model)
    if read.layouts is not None:
        _check_layouts(read.layouts, mine)
    _check_keys(read.state, model.state_dict(), mine)
    _check_fingerprint(read, model)
    if read.layouts is None and not isinstance(source, Mapping):
        warnings.warn(
            f"'{source}' is a plain state dict, which does not say which network it was "
            "written for: only its keys and shapes were checked, so another spec's weights of "
            "the same shapes load too; write weights with odedsl.checkpoints.save_checkpoint, "
            "which records the network",
            UserWarning,
            stacklevel=2,
        )
    model.load_state_dict(read.state)
    return model


def _parameter_values() -> str:
    """The network parameters a spec was loaded with, as the caller gives them."""
    return by_face("--set values", "parameter values")


def _spec_written_for() -> str:
    return f"the spec (and {_parameter_values()}) it was written for"


def _check_fingerprint(read: _Read, model: nn.Module) -> None:
    """Refuse weights whose file names another network than ``model`` (both weights
    fingerprints known and of one version): keys and shapes fit an Euler ResNet's weights in
    a momentum net, or tanh residuals' in relu ones, just as well."""
    mine = getattr(model, "weights_fingerprint", None)
    saved = read.fingerprint
    if not isinstance(mine, str) or saved is None:
        return
    if saved.partition(":")[0] != mine.partition(":")[0] or saved == mine:
        return  # written by an odedsl that described networks otherwise: cannot say
    name = getattr(model, "network_name", None)
    names = f" ('{read.network}', not '{name}')" if read.network and read.network != name else ""
    raise CheckpointError(
        f"the checkpoint was written for another network{names}: its keys and shapes fit "
        "this one's, but its layers, integrators or weights rules differ",
        f"load it into {_spec_written_for()}",
    )


def _check_layouts(saved: Mapping[str, StageLayout], mine: Mapping[str, StageLayout]) -> None:
    for path, want in mine.items():
        got = saved.get(path)
        if got is None:
            raise CheckpointError(
                f"the checkpoint has no ODE stage '{path}' ({want.describe()})",
                f"it was written for another spec: load it into {_spec_written_for()}",
            )
        if not got.holds_weights_for(want):
            hint = (
                CONVERT_HINT
                if _convertible(got, want)
                else f"no conversion keeps these weights: load it into {_spec_written_for()}"
            )
            raise CheckpointError(
                f"stage '{path}': the checkpoint holds weights for {got.describe()}, the "
                f"network has {want.describe()}",
                hint,
            )
    for path in saved:
        if path not in mine:
            raise CheckpointError(
                f"the checkpoint has an ODE stage '{path}' the network lacks",
                f"it was written for another spec: the network's ODE stages are "
                f"{', '.join(repr(p) for p in mine) or 'none'}; load it into the spec it was "
                "written for",
            )


def _convertible(src: StageLayout, dst: StageLayout) -> bool:
    if (src.integrator, src.residuals, src.offsets) != (dst.integrator, dst.residuals, dst.offsets):
        return False
    pair = ((src.schedule, src.depth), (dst.schedule, dst.depth))
    try:
        _check_conversion(*pair)
    except ValueError:
        return False
    return _inexact(*pair, dst.offsets, buffers=False) is None  # buffers: the file cannot say


def _shape(t: Tensor | None) -> tuple[int, ...] | None:
    return tuple(t.shape) if t is not None else None


def _check_keys(
    state: Mapping[str, Tensor], want: Mapping[str, Tensor], stages: Mapping[str, StageLayout]
) -> None:
    """The first key (in the model's order, then the checkpoint's) that is missing, extra or
    shaped differently, with a hint when a stage holds another number of weight slots."""
    first: tuple[str, Tensor | None, Tensor | None] | None = None
    for key, value in want.items():
        got = state.get(key)
        if got is None or got.shape != value.shape:
            first = (key, value, got)
            break
    if first is None:
        extra = next((k for k in state if k not in want), None)
        if extra is None:
            return
        first = (extra, None, state[extra])
    key, expected, found = first
    if expected is None:
        assert found is not None
        message = f"the checkpoint has key '{key}' {list(found.shape)} that the network lacks"
    elif found is None:
        message = (
            f"key '{key}' {list(expected.shape)} of the network is missing from the checkpoint"
        )
    else:
        message = (
            f"key '{key}' has shape {list(found.shape)} in the checkpoint, "
            f"{list(expected.shape)} in the network"
        )
    hint = (
        "was it written for another spec, depth or weights rule? load it into "
        + _spec_written_for()
    )
    for path, layout in stages.items():
        counts = {r: _slots_in(state, f"{path}.{r}.") for r in layout.residuals}
        if any(0 < n != layout.slots for n in counts.values()):
            shown = ", ".join(f"{r}: {n}" for r, n in counts.items())
            hint = (
                f"stage '{path}' has {layout.slots} weight slot(s) per residual "
                f"({layout.describe()}), the checkpoint {shown}; {CONVERT_HINT}"
            )
            break
    raise CheckpointError(
        "the checkpoint does not fit the network: " + message,
        hint,
        key=key,
        expected=_shape(expected),
        found=_shape(found),
    )


def _conversion_hint(why: str) -> str:
    """What to do when ``expand_state_dict`` refuses (its ValueError's text says which case)."""
    if why.startswith("cannot convert") and "exactly: buffers" in why:
        return (
            "running statistics are not blended, so each layer must read them from the slot "
            "the source reads them from: keep the source's weights rule, convert from tied, "
            "or to untied with an integrator that evaluates residuals at t and t + h only "
            "(euler, heun), or use residuals without BatchNorm"
        )
    if why.startswith("cannot convert") and "exactly:" in why:
        return (
            "keep the source's weights rule, or convert where θ(s) is linear between the "
            "destination's slots: from tied; from interpolated(k) at a depth that is a multiple "
            "of k - 1; from any rule with an integrator that evaluates residuals at t and t + h "
            "only (euler, heun)"
        )
    if why.startswith("cannot convert"):
        return (
            "only conversions that lose no weights are made: from tied to any rule; from shared "
            "or interpolated to untied; from untied to a deeper untied stage; from "
            "interpolated(k) to interpolated(j) where j - 1 is a multiple of k - 1"
        )
    if "ODEDSL_MAX_DEPTH" in why:
        return "raise ODEDSL_MAX_DEPTH, or convert to a shallower network"
    return (
        "the state dict does not have the source's weight slots: pass as source the spec "
        f"(and {_parameter_values()}) or model it was written for"
    )


def _slots_in(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].partition(".")[0] for k in state if k.startswith(prefix)})


# ---------------------------------------------------------------------------- conversion
def convert_state_dict(
    source: nn.Module | Any,
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    **params: Any,
) -> dict[str, Tensor]:
    """``state_dict`` (written for ``source``: a model, or a spec with ``params``) mapped onto
    ``model``'s stage layouts, stage by stage, by evaluating θ(s) at the model's slots.

    Other keys (stem, transitions, head) pass through. Stages must use the same integrator;
    conversions that would lose information (untied → tied, deeper → shallower) are refused,
    and so are those after which the integrator would read other weights than the source's
    θ(s) where it evaluates the residual: untied slots are blended linearly in between, so
    RK4's t + h/2 gets θ back only where θ is linear over the layer (never from shared(k)),
    and BatchNorm statistics, read from a blend's heaviest slot, must be the source's there.
    The result is checked against ``model``'s keys and shapes before it is returned.
    """
    src = stage_layouts(source, **params)
    dst = stage_layouts(model)
    out: dict[str, Tensor] = dict(state_dict)
    for path, want in dst.items():
        have = src.get(path)
        if have is None:
            raise CheckpointError(
                f"the source network has no ODE stage '{path}'",
                "stages are converted by name: pass as source the spec (and "
                f"{_parameter_values()}) or model the weights were written for; its ODE stages are "
                f"{', '.join(repr(p) for p in src) or 'none'}",
            )
        if (have.integrator, have.residuals, have.offsets) != (
            want.integrator,
            want.residuals,
            want.offsets,
        ):
            other = "" if have.integrator != want.integrator else " with other parameters"
            raise CheckpointError(
                f"stage '{path}': integrator '{have.integrator}' in the source, "
                f"'{want.integrator}'{other} in the network: their weights do not correspond",
                "a conversion changes only the weights rule and the depth: give the network's "
                f"stage the source's integrator ({have.describe()})",
            )
        stage = model.get_submodule(path)
        assert is_ode_stage(stage)
        buffers = {
            name for r in want.residuals for name, _ in stage.residual_modules(r)[0].named_buffers()
        }
        try:
            out = expand_state_dict(
                out,
                f"{path}.",
                want.residuals,
                (have.schedule, have.depth),
                (want.schedule, want.depth),
                want.offsets,
                buffers,
            )
        except ValueError as exc:
            raise CheckpointError(
                f"stage '{path}' (integrator '{want.integrator}'): {exc}",
                _conversion_hint(str(exc)),
            ) from None
    _check_keys(out, model.state_dict(), {})
    return out
