"""Numerical guards: non-finite states and inversion drift, reported with stage and layer.

Checks never synchronise the device per layer: :class:`FiniteTracker` folds each layer's
"all finite" test into one small tensor holding the first bad layer, read once at the end.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from odedsl.runtime.errors import (
    InversionDriftError,
    InversionDriftWarning,
    NumericalFault,
    odedsl_command,
)
from odedsl.runtime.program import EXACT_KINDS

CHECK_INVERSE_ENV = "ODEDSL_CHECK_INVERSE"
CHECK_FORWARD_ENV = "ODEDSL_CHECK_FORWARD"

# Default drift tolerances (relative, on the reconstructed stage input) when the check is on
# without a number. Exact inverses only accumulate rounding; approximate ones drift O(h^p).
EXACT_DRIFT_TOL = {torch.float64: 1e-8, torch.float32: 1e-3}
APPROX_DRIFT_TOL = 5e-2


#: What to do about a non-finite state, by where it was found (:class:`FiniteTracker`).
NON_FINITE_HINTS = {
    "forward state": (
        "look for diverging weights (try a smaller learning rate), a non-finite stage input, "
        "or a residual that divides by or takes the log of a value reaching 0"
    ),
    "state reconstructed by invert backward": (
        "the forward pass was finite, so the inverse made it: rounding amplified by an "
        "ill-conditioned inverse, or weights changed in place between forward and backward; "
        "use backward checkpoint(k) or store for this stage "
        f"({odedsl_command('odedsl gradcheck SPEC')} measures the modes against each other)"
    ),
}


class FiniteTracker:
    """Remembers the first layer whose state held NaN/Inf, without a sync per layer."""

    def __init__(self, stage: str, where: str) -> None:
        self.stage = stage
        self.where = where
        self._bad: Tensor | None = None

    def update(self, layer: int, state: Sequence[Tensor]) -> None:
        ok = torch.stack([torch.isfinite(s).all() for s in state]).all()
        if self._bad is None:
            self._bad = torch.full((), -1, dtype=torch.int64, device=ok.device)
        self._bad = torch.where((self._bad < 0) & ~ok, layer, self._bad)

    def check(self) -> None:
        """One sync: raise :class:`NumericalFault` naming the first bad layer, if any."""
        if self._bad is None:
            return
        layer = int(self._bad.item())
        if layer >= 0:
            raise NumericalFault(
                f"stage {self.stage!r}: non-finite value (NaN/Inf) in the {self.where} "
                f"at layer {layer}",
                stage=self.stage,
                layer=layer,
                hint=NON_FINITE_HINTS.get(self.where),
            )


class FiniteProbe:
    """A running sum of the states given to :meth:`add`; non-finite iff one of them held
    NaN/Inf (or, rarely, finite values whose sum overflowed: callers then check exactly).
    Two small ops per state instead of :class:`FiniteTracker`'s eight, one sync at the end."""

    def __init__(self) -> None:
        self._sum: Tensor | None = None

    def add(self, state: Sequence[Tensor]) -> None:
        for s in state:
            # float16 sums of finite states overflow past 65504: a false alarm ran the
            # non-finite locator's extra reconstruction walk on every backward
            part = s.detach().sum(dtype=torch.promote_types(s.dtype, torch.float32))
            if self._sum is None:
                self._sum = part
            else:
                self._sum = self._sum + (
                    part if part.dtype == self._sum.dtype else part.to(self._sum.dtype)
                )

    def finite(self) -> bool:
        return self._sum is None or bool(torch.isfinite(self._sum).item())


#: How the ``ODEDSL_CHECK_*`` switches are written (any case); anything else is refused, so
#: ``ODEDSL_CHECK_FORWARD=false`` cannot switch a check on.
OFF_WORDS = ("0", "false", "no", "off")
ON_WORDS = ("1", "true", "yes", "on")


def env_switch(name: str) -> bool | None:
    """``ODEDSL_<name>`` as a switch: ``None`` when unset or blank, else on or off; a
    ValueError naming the variable for any other value."""
    given = os.environ.get(name, "")
    raw = given.strip().lower()
    if not raw:
        return None
    if raw in OFF_WORDS or raw in ON_WORDS:
        return raw in ON_WORDS
    raise ValueError(f"{name}={_shown(given)}: expected 1 or 0 (true/false, yes/no, on/off)")


def _shown(value: str) -> str:
    """A variable's value in a message: as written, 40 characters at most."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


def check_inverse_env() -> float | bool | None:
    """``ODEDSL_CHECK_INVERSE``: ``None`` unset; ``False`` off (the drift sketch too); ``nan``
    on with the default tolerances; a number: on with that relative tolerance (positive,
    finite). A ValueError naming the variable for anything else."""
    raw = os.environ.get(CHECK_INVERSE_ENV, "").strip()
    try:
        switch = env_switch(CHECK_INVERSE_ENV)
    except ValueError:
        switch = None
    else:
        return None if switch is None else (float("nan") if switch else False)
    try:
        tol = float(raw)
    except ValueError:
        tol = math.nan
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(
            f"{CHECK_INVERSE_ENV}={_shown(raw)}: expected 0, 1 or a relative tolerance above 0"
        )
    return tol


def forward_check_enabled(flag: bool) -> bool:
    """The opt-in forward NaN check: constructor flag or ``ODEDSL_CHECK_FORWARD=1``."""
    return flag or bool(env_switch(CHECK_FORWARD_ENV))


def inverse_tolerance(explicit: float | bool | None) -> float | None:
    """Tolerance for the inverse check; ``nan`` means "on, use the default for the dtype".

    ``check_inverse=tol`` (``True``: defaults) wins; else ``ODEDSL_CHECK_INVERSE`` = ``1``
    (defaults) or a number.
    """
    if explicit is True:
        return float("nan")
    if explicit is not None and explicit is not False:
        return float(explicit)
    setting = check_inverse_env()
    return None if setting is None or setting is False else float(setting)


def _squares(got: Sequence[Tensor], true: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """‖got − true‖² and ‖true‖² over all state tensors, in float64 (no sync)."""
    num = sum(((g.double() - t.double()) ** 2).sum() for g, t in zip(got, true, strict=True))
    den = sum((t.double() ** 2).sum() for t in true)
    # the state's device: as_tensor alone follows torch.set_default_device, even for tensors
    device = true[0].device if true else None
    return torch.as_tensor(num, device=device), torch.as_tensor(den, device=device)


def relative_error(got: Sequence[Tensor], true: Sequence[Tensor]) -> float:
    """‖got − true‖ / ‖true‖ over all state tensors (one sync)."""
    num, den = _squares(got, true)
    return float(num.sqrt() / den.sqrt().clamp_min(1e-300))


def drift_ratio(err2: Tensor, ref2: Tensor) -> Tensor:
    """sqrt(err2 / ref2) as a float64 tensor (no sync): 0 against an exactly zero reference
    (a zero-initialised state: rounding there is no drift), Inf for a non-finite error."""
    value = torch.where(ref2 > 0, (err2 / ref2.clamp_min(1e-300)).sqrt(), err2 * 0)
    return torch.nan_to_num(value, nan=math.inf)


def relative_drift(got: Sequence[Tensor], true: Sequence[Tensor]) -> Tensor:
    """:func:`drift_ratio` of ``got`` against ``true`` over all state tensors (no sync)."""
    return drift_ratio(*_squares(got, true))


def exact_drift_tolerance(dtype: torch.dtype) -> float:
    """The drift of an exact reconstruction the check reports, by default, for ``dtype``."""
    return EXACT_DRIFT_TOL.get(dtype, 1e-2)


def report_drift(stage: str, kind: str, error: float, tol: float, dtype: torch.dtype) -> None:
    """Raise for exact kinds, warn for approximate ones, when ``error`` exceeds the tolerance."""
    exact = kind in EXACT_KINDS
    if tol != tol:  # nan: defaults
        tol = exact_drift_tolerance(dtype) if exact else APPROX_DRIFT_TOL
    if not error > tol and error == error:
        return
    msg = (
        f"stage {stage!r}: invert backward reconstructed the stage input with relative error "
        f"{error:.3g} (tolerance {tol:.3g}, inverse kind {kind!r})"
    )
    if exact:
        raise InversionDriftError(
            msg + "; weights or buffers changed between forward and backward, or rounding was "
            "amplified (use checkpoint mode or a smaller anchor tolerance)",
            stage=stage,
            relative_error=error,
        )
    warnings.warn(InversionDriftWarning(msg, stage=stage, relative_error=error), stacklevel=2)
