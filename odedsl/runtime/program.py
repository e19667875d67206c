"""The contract between the integrator algebra and the runtime.

The algebra (``odedsl.integrators``) turns an integrator's update statements into an
:class:`IntegratorProgram`; the runtime (``odedsl.runtime``) executes it over N layers in any
backward mode. The runtime imports nothing from the front end or the compiler, so generated
standalone code can carry this module and the runtime alone.

Conventions
-----------
* A *state* is a tuple of tensors, one per state variable of the integrator (``(x,)``,
  ``(y, z)``, ``(x, v)``, ``(prev, x)``...).
* A :data:`ResidualCall` evaluates residual function ``name`` at ``t + c * h`` (``c`` is the
  *offset*, a Python float: 0 for ``f(x, t)``, 1 for ``f(x, t + h)``, 0.5 for RK4's midpoints)
  with the weights the stage's weight schedule gives layer ``n`` at that offset. The runtime
  builds the call for each layer; programs never see weights.
* ``h`` and ``t`` are Python floats: the step and the time ``t_n = t0 + n * h`` of the layer.
* ``kind`` says what the inverse promises: ``exact`` (to rounding), ``exact-unstable``
  (algebraically exact but dividing by a factor of modulus < 1 each layer, so rounding grows
  geometrically), ``approximate`` (the reverse-time scheme of Sander et al. 2022, eqs. 6 and 9)
  or ``none`` (no inverse; ``invert`` mode is refused before this point).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

State = tuple[Tensor, ...]
ResidualCall = Callable[[str, Tensor, float], Tensor]
StepFn = Callable[[State, ResidualCall, float, float], State]
InverseKind = Literal["exact", "exact-unstable", "approximate", "none"]
#: The kinds whose inverse is exact in exact arithmetic (rounding aside).
EXACT_KINDS: tuple[InverseKind, ...] = ("exact", "exact-unstable")


@dataclass(frozen=True)
class AffineUpdate:
    """``state[target] = factor * state[target] + increment(state, call, h, t)``.

    ``increment`` never reads ``state[target]``, so it can be evaluated from the state after
    the update as well as before: the fused backward evaluates it once with grad, both to undo
    the update (``old = (new - e) / factor``) and to get its vector-Jacobian product.
    """

    target: int
    factor: float
    increment: Callable[[State, ResidualCall, float, float], Tensor]


@dataclass(frozen=True)
class SwapUpdate:
    """Exchange ``state[a]`` and ``state[b]`` (two-step schemes rotate ``(prev, x)``)."""

    a: int
    b: int


Update = AffineUpdate | SwapUpdate


@dataclass(frozen=True)
class Step:
    """One layer's update and what is known about undoing it.

    ``forward`` maps the state at ``t`` to the state at ``t + h``. ``inverse`` maps it back
    (exactly or approximately, per ``kind``). ``updates`` is the same step written as a
    sequence of exactly invertible updates; present only for exact kinds, it lets the runtime
    fuse reconstruction and recomputation.
    """

    forward: StepFn
    inverse: StepFn | None
    kind: InverseKind
    updates: tuple[Update, ...] | None = None


@dataclass(frozen=True)
class IntegratorProgram:
    """An integrator ready to run: state layout, per-layer step, optional first step."""

    name: str
    state_names: tuple[str, ...]
    residuals: tuple[str, ...]
    offsets: tuple[float, ...]
    init_state: Callable[[Tensor], State]
    output: Callable[[State], Tensor]
    step: Step
    first: Step | None = None  # two-step schemes: the explicitly stated first layer
    #: each residual's forward offsets (None: every residual's are ``offsets``), for the
    #: call an approximate inverse replays (:func:`~odedsl.runtime.calls.replayed_offset`)
    residual_offsets: Mapping[str, tuple[float, ...]] | None = None
    #: ``(h, depth, t0) -> (forward fault, inverse fault)``: where the step's or the inverse's
    #: coefficients fail at those layer times (``None`` each where they do not; the whole
    #: check ``None`` where unknown, as in exported code). The algebra's dry run
    #: (:class:`~odedsl.integrators.dry_run.CoefficientCheck`); the runtime asks it when a
    #: stage's depth or backward mode changes, so set_depth cannot put a layer on a
    #: singularity the validator would have refused.
    coefficient_check: Callable[[float, int, float], tuple[object | None, object | None]] | None = (
        None
    )

    @property
    def kind(self) -> InverseKind:
        """The weakest inverse kind over the steps the stage runs."""
        order = ["exact", "exact-unstable", "approximate", "none"]
        kinds = [self.step.kind] + ([self.first.kind] if self.first else [])
        return max(kinds, key=order.index)  # type: ignore[return-value]
