"""A check of every exact ``invert`` backward that costs a few numbers per sample.

An exact inverse is exact in exact arithmetic; in floating point it can amplify rounding without
bound when a residual is ill-conditioned (a normalisation of a nearly constant channel divides
by ``sqrt(eps)`` every layer), and then the gradients differ from ``store``'s by as much as the
reconstructed input differs from the true one. Keeping the true input to compare (the opt-in
``ODEDSL_CHECK_INVERSE``) costs one more state per stage; this keeps a *sketch* instead: for
each sample of the state (its tensors side by side), its squared norm and its inner products with
:data:`PROJECTIONS` fixed Gaussian vectors. For an error ``e`` the mean of ``<r_j, e>²`` over
the projections estimates ``‖e‖²`` (unbiased, within a factor of about 2 with 8 projections),
so the reconstructed input's sketch gives the relative drift without the input. Exceeding
:data:`SKETCH_TOL` (loose: it is there to make catastrophic failures loud, not to police
rounding) warns once per stage with the estimate.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from odedsl.runtime.errors import InversionDriftWarning
from odedsl.runtime.guard import CHECK_INVERSE_ENV

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage

PROJECTIONS = 8
#: Relative drift of the reconstructed stage input above which an exact inverse warns.
SKETCH_TOL = {torch.float64: 1e-6, torch.float32: 1e-2}
_FALLBACK_TOL = 1e-1  # half precision states
_SEED = 0x0DE5
_CACHE: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
_CACHE_LIMIT = 32


def _projection(features: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The fixed ``features × PROJECTIONS`` Gaussian matrix (cached per size, dtype, device)."""
    key = (features, dtype, device)
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        g = torch.Generator().manual_seed(_SEED)
        found = torch.randn(features, PROJECTIONS, generator=g, dtype=torch.float64)
        found = _CACHE[key] = found.to(device=device, dtype=dtype)
    return found


def _rows(state: Sequence[Tensor]) -> Tensor:
    """The state as one ``samples × features`` matrix (tensors side by side, detached)."""
    rows = [s.reshape(s.shape[0], -1) if s.dim() >= 2 else s.reshape(1, -1) for s in state]
    rows = [r.detach() for r in rows]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def sketch(state: Sequence[Tensor]) -> list[Tensor]:
    """``[(samples, PROJECTIONS + 1)]`` in the state's dtype: the projections then the squared
    norm of each sample (rounding them costs a relative drift floor of about the dtype's
    epsilon, far below :data:`SKETCH_TOL`). A list, to save with ``save_for_backward``."""
    rows = _rows(state)
    proj = rows @ _projection(rows.shape[1], rows.dtype, rows.device)
    return [torch.cat([proj, (rows * rows).sum(dim=1, keepdim=True)], dim=1)]


def sketch_bytes(state: Sequence[Tensor]) -> int:
    """What :func:`sketch` keeps for ``state``: ``PROJECTIONS + 1`` numbers per sample."""
    rows = state[0].shape[0] if state[0].dim() >= 2 else 1
    return rows * (PROJECTIONS + 1) * state[0].element_size()


def estimated_drift(
    state: Sequence[Tensor], saved: Sequence[Tensor], output: Sequence[Tensor]
) -> float:
    """Estimated ‖state − original‖ / max(‖original‖, ‖output‖) from the original's
    :func:`sketch` (one sync). The stage output joins the scale because rounding grows with the
    magnitudes the walk passes through: a stage input of zero (a zero-initialised stem, say)
    reconstructed to within rounding of a large output is not a drift."""
    rows = _rows(state)
    (sk,) = saved
    proj = rows @ _projection(rows.shape[1], rows.dtype, rows.device)
    err2 = (proj.double() - sk[:, :PROJECTIONS].double()).square().mean(dim=1).sum()
    out = _rows(output).double()
    scale2 = torch.maximum(sk[:, PROJECTIONS].double().sum(), (out * out).sum())
    value = float((err2 / scale2.clamp_min(1e-300)).sqrt())
    return value if math.isfinite(value) else float("inf")


def sketch_tolerance(dtype: torch.dtype) -> float:
    return SKETCH_TOL.get(dtype, _FALLBACK_TOL)


def sketch_enabled(stage: OdeStage) -> bool:
    """On unless ``check_inverse=False`` or ``ODEDSL_CHECK_INVERSE=0``."""
    return stage.check_inverse is not False and os.environ.get(CHECK_INVERSE_ENV, "") != "0"


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
