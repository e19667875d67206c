"""A check of every exact ``invert`` backward that costs a few numbers per stage.

An exact inverse is exact in exact arithmetic; in floating point it can amplify rounding without
bound when a residual is ill-conditioned (a normalisation of a nearly constant channel divides
by ``sqrt(eps)`` every layer), and then the gradients differ from ``store``'s by as much as the
reconstructed input differs from the true one. Keeping the true input to compare (the opt-in
``ODEDSL_CHECK_INVERSE``) costs one more state per stage; this keeps a *sketch* instead: the
state's squared norm and its inner products with :data:`PROJECTIONS` fixed random vectors
``r_j[b, f] = W[b, j] P[f, j]`` (``P`` Gaussian over features, ``W`` Gaussian over samples,
each column independent, so the entries are uncorrelated with unit variance). For an error
``e`` the mean of ``<r_j, e>²`` over the projections estimates ``‖e‖²`` (unbiased; within a
factor of about 2 with 16 projections), so the reconstructed input's sketch gives the relative
drift without the input, in ``PROJECTIONS + 1`` float64 numbers per stage whatever the batch
(the first version kept 9 per sample: 9 KiB at batch 256, as much as 14 % of a small MLP
state). Exceeding :data:`SKETCH_TOL` (loose: it is there to make catastrophic failures loud,
not to police rounding) warns once per stage with the estimate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from odedsl.runtime.errors import InversionDriftWarning
from odedsl.runtime.guard import check_inverse_env, drift_ratio

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage

PROJECTIONS = 16
#: Relative drift of the reconstructed stage input above which an exact inverse warns.
SKETCH_TOL = {torch.float64: 1e-6, torch.float32: 1e-2}
_FALLBACK_TOL = 1e-1  # half precision states
_SEED = 0x0DE5
_CACHE: dict[tuple[int, torch.dtype, torch.device, int], Tensor] = {}
_CACHE_LIMIT = 32


def _gaussian(rows: int, dtype: torch.dtype, device: torch.device, salt: int) -> Tensor:
    """A fixed ``rows × PROJECTIONS`` Gaussian matrix (cached per size, dtype, device, salt;
    only real tensors: one made while tracing, a fake or functional one, must not outlive
    the trace)."""
    key = (rows, dtype, device, salt)
    found = _CACHE.get(key)
    if found is None:
        g = torch.Generator().manual_seed(_SEED + salt)
        # on the generator's device: under torch.set_default_device("cuda") a CPU generator
        # with a CUDA randn is an error, and every exact invert call builds a sketch
        found = torch.randn(rows, PROJECTIONS, generator=g, dtype=torch.float64, device="cpu")
        found = found.to(device=device, dtype=dtype)
        if type(found) is Tensor and not torch.compiler.is_compiling():
            if len(_CACHE) >= _CACHE_LIMIT:
                _CACHE.clear()
            _CACHE[key] = found
    return found


def _rows(state: Sequence[Tensor]) -> Tensor:
    """The state as one ``samples × features`` matrix (tensors side by side, detached)."""
    rows = [  # the feature count spelled out: -1 is ambiguous for an empty batch
        s.reshape(s.shape[0], math.prod(s.shape[1:])) if s.dim() >= 2 else s.reshape(1, -1)
        for s in state
    ]
    rows = [r.detach() for r in rows]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def _project(rows: Tensor) -> Tensor:
    """``<r_j, rows>`` for the :data:`PROJECTIONS` vectors, in float64: ``(PROJECTIONS,)``."""
    per_sample = rows @ _gaussian(rows.shape[1], rows.dtype, rows.device, 0)
    weights = _gaussian(rows.shape[0], torch.float64, rows.device, 1)
    return (per_sample.double() * weights).sum(dim=0)


def sketch(state: Sequence[Tensor]) -> list[Tensor]:
    """``[(PROJECTIONS + 1,)]`` float64: the projections then the squared norm of the state. A
    list, to save with ``save_for_backward``."""
    rows = _rows(state)
    norm2 = rows.square().sum(dtype=torch.float64).reshape(1)
    return [torch.cat([_project(rows), norm2])]


def sketch_bytes(state: Sequence[Tensor]) -> int:
    """What :func:`sketch` keeps for ``state``: ``PROJECTIONS + 1`` float64 numbers."""
    return (PROJECTIONS + 1) * 8


def estimated_drift(
    state: Sequence[Tensor], saved: Sequence[Tensor], output: Sequence[Tensor]
) -> float:
    """Estimated ‖state − original‖ / ‖original‖ from the original's :func:`sketch` (one
    sync); relative to ‖output‖ only when the original is exactly zero (a zero-initialised
    stem: rounding of the output is then no drift).

    Why not relative to the larger of the two, as before 2026-12-02: a stage that amplifies
    its state (momentum with γ = 3, a coupling with large linear residuals) reconstructs its
    input to within rounding of the *output*, which can be all of the input; the gradients
    were then 0.36 to 5.7 off in float64 while that estimate stayed below tolerance."""
    (sk,) = saved
    err2, in2 = _error2(state, sk), sk[PROJECTIONS]
    scale2 = torch.where(in2 > 0, in2, _rows(output).square().sum(dtype=torch.float64))
    value = float((err2 / scale2.clamp_min(1e-300)).sqrt())
    return value if math.isfinite(value) else float("inf")


def layer_drift(state: Sequence[Tensor], saved: Tensor) -> Tensor:
    """Estimated ‖state − original‖ / ‖original‖ against one :func:`sketch`, as a float64
    scalar tensor (no sync: anchor measurement stacks one per layer); 0 when the original is
    exactly zero, NaN/Inf states give Inf."""
    return drift_ratio(_error2(state, saved), saved[PROJECTIONS])


def _error2(state: Sequence[Tensor], saved: Tensor) -> Tensor:
    """The estimate of ‖state − original‖² from the original's :func:`sketch`."""
    return (_project(_rows(state)) - saved[:PROJECTIONS]).square().mean()


def sketch_tolerance(dtype: torch.dtype) -> float:
    return SKETCH_TOL.get(dtype, _FALLBACK_TOL)


def sketch_enabled(stage: OdeStage) -> bool:
    """On unless ``check_inverse=False`` or ``ODEDSL_CHECK_INVERSE=0`` (or ``off``...)."""
    return stage.check_inverse is not False and check_inverse_env() is not False


def warn_if_drifted(stage: OdeStage, drift: float, dtype: torch.dtype) -> None:
    """Once per stage, when ``drift`` passes :func:`sketch_tolerance`: the estimate, and what to
    do about it."""
    tol = sketch_tolerance(dtype)
    if not drift > tol or stage.__dict__.get("_drift_warned"):
        return
    stage.__dict__["_drift_warned"] = True
    message = (
        f"stage {stage.name!r}: its exact inverse ({stage.kind!r}) reconstructed the stage input "
        f"with an estimated relative error of {drift:.3g} (sketch of {PROJECTIONS} random "
        f"projections; tolerance {tol:.3g}), so its invert-mode gradients may differ from "
        "store's by as much: rounding was amplified (e.g. a normalisation of a nearly constant "
        "channel) or the weights changed between forward and backward. Use backward "
        "checkpoint(k) for this stage, or ODEDSL_CHECK_INVERSE=1 to measure exactly and raise. "
        "Further warnings for this stage are suppressed."
    )
    warnings.warn(
        InversionDriftWarning(message, stage=stage.name, relative_error=drift), stacklevel=3
    )
