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

import torch
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
    #: check ``None`` where unknown, as in a program assembled by hand). The algebra's dry run
    #: (:class:`~odedsl.integrators.dry_run.CoefficientCheck`), or in exported code
    #: :class:`CoefficientProbe`; the runtime asks it when a stage's depth or backward mode
    #: changes, so set_depth cannot put a layer on a singularity the validator would have
    #: refused.
    coefficient_check: Callable[[float, int, float], tuple[object | None, object | None]] | None = (
        None
    )

    @property
    def kind(self) -> InverseKind:
        """The weakest inverse kind over the steps the stage runs."""
        order = ["exact", "exact-unstable", "approximate", "none"]
        kinds = [self.step.kind] + ([self.first.kind] if self.first else [])
        return max(kinds, key=order.index)  # type: ignore[return-value]


@dataclass(frozen=True)
class CoefficientFault:
    """The first layer time at which a step's coefficients fail: ``inverse``, the inverse
    step's (which steps back from ``t + h``); else the forward's."""

    inverse: bool
    t: float
    h: float
    message: str

    def __str__(self) -> str:
        if self.inverse:
            where = f"the inverse of the layer at t = {self.t:g}, which steps back from t + h"
            return f"{self.message} in {where} = {self.t + self.h:g}"
        return f"{self.message} at t = {self.t:g}"


#: The probe state: distinct generic values of the state variables (none 0 or 1, no two
#: equal), as the algebra's dry run uses.
_PROBE_VALUE = 0.6180339887
_PROBE_SPREAD = 0.2360679775


def _probe_state(slots: int, *rows: int) -> State:
    """The probe's state: ``slots`` float64 variables of shape ``(*rows, 2)`` on the CPU."""
    return tuple(
        torch.full((*rows, 2), _PROBE_VALUE + _PROBE_SPREAD * k, dtype=torch.float64, device="cpu")
        for k in range(slots)
    )


def _probe_residual(name: str, x: Tensor, c: float) -> Tensor:
    """The probe's residual: ones, whatever the weights."""
    return torch.ones_like(x)


#: ``find(fn, layers)``: the first of ``layers`` at which step function (or graph) ``fn``
#: fails, with the message, or None.
FindFault = Callable[[object, range], tuple[int, str] | None]


def first_faults(
    step: object, first: object | None, h: float, depth: int, t0: float, find: FindFault
) -> tuple[CoefficientFault | None, CoefficientFault | None]:
    """The first failing layer of the forward steps and of the inverse steps, ``find`` asked
    where a stage runs each: ``first`` (a start block) at layer 0 only, ``step`` at the other
    layers (all of them without a start block). ``step`` and ``first`` have ``forward`` and
    ``inverse`` (a :class:`Step`'s functions, or the algebra's graphs of them); the layer
    times are ``t0 + n * h``, as :meth:`OdeStage.time_at` computes them. The one skeleton of
    :class:`CoefficientProbe` and the algebra's dry run."""
    blocks = [(first, range(1))] if first is not None else []
    blocks.append((step, range(1 if first is not None else 0, depth)))
    faults: list[CoefficientFault | None] = []
    for inverse in (False, True):
        fault = None
        for block, layers in blocks:
            fn = block.inverse if inverse else block.forward  # type: ignore[attr-defined]
            found = find(fn, layers) if fn is not None and len(layers) else None
            if found is not None:
                n, message = found
                fault = CoefficientFault(inverse, t0 + n * h, h, message)
                break
        faults.append(fault)
    return faults[0], faults[1]


@dataclass(frozen=True)
class CoefficientProbe:
    """The ``coefficient_check`` of a program written as code (the step classes ``odedsl
    build`` writes), where the algebra's dry run is not at hand: the program's own forward and
    inverse steps run at every layer time a stage runs them at (:func:`first_faults`), on a
    float64 state of ``slots`` variables with generic values and residuals that return ones,
    as the dry run runs the step graphs. A coefficient that raises (Python floats: division
    by zero, overflow) or a state that comes out not finite or not real is that layer's fault.
    Steps that do not read ``t`` (``reads_t`` false) have the same coefficients at every
    layer: one time stands for all. Otherwise each layer is probed, in Python, each time the
    depth or the backward mode changes: about 35 µs a layer on one CPU core (0.35 s at depth
    10,000, where the dry run of the compiled model takes 1 ms).
    """

    slots: int
    step: Step
    first: Step | None = None
    reads_t: bool = True

    def __call__(
        self, h: float, depth: int, t0: float = 0.0
    ) -> tuple[CoefficientFault | None, CoefficientFault | None]:
        """The first failure of the forward steps and of the inverse steps (``None``: none)."""
        state = _probe_state(self.slots)

        def find(fn: object, layers: range) -> tuple[int, str] | None:
            for n in layers if self.reads_t else layers[:1]:
                message = _probe(fn, state, h, t0 + n * h)  # type: ignore[arg-type]
                if message is not None:
                    return n, message
            return None

        with torch.no_grad():
            return first_faults(self.step, self.first, h, depth, t0, find)


def _probe(fn: StepFn, state: State, h: float, t: float) -> str | None:
    """What fails when ``fn`` runs on the probe ``state`` at ``(h, t)`` (``None``: nothing)."""
    try:
        out = fn(state, _probe_residual, h, t)
    except (ArithmeticError, ValueError) as exc:  # Python float coefficients
        return str(exc)
    except Exception:  # a step edited beyond what the probe state can run: not judged
        return None
    for value in out if isinstance(out, tuple) else (out,):
        if value.is_complex():  # a Python float ** 0.5 of a negative
            return "a coefficient is not real"
        if not bool(torch.isfinite(value).all()):
            return "a coefficient is not finite"
    return None
