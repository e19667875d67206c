"""The coefficient dry run: an integrator's steps tried at every time the stage evaluates them.

A coefficient that divides by zero or overflows for this h, these parameters and some layer's
time would otherwise crash (or turn the state to inf) in the middle of training. The dry run
evaluates each step's graphs (forward and inverse) at exactly the layer times the stage runs
them at, ``t_n = t0 + n·h`` (``t0`` is 0 for a compiled stage): a start block at ``t_0`` only,
the step at every other layer's time (every layer's when there is no start block), and no
other time, since a singularity between two layers is no fault (``h / (t - 1/3)`` at depth 4).
Forward and inverse are judged apart: an inverse that steps back from a singularity
(``h / (1 - t)`` read at ``t + h = 1`` by the last layer's reverse Euler step) only matters to
``invert``; ``store`` and ``checkpoint`` never run it. The validator runs it on every stage,
and the runtime (:class:`CoefficientCheck`, a program's ``coefficient_check``) again when
``set_depth`` or the backward mode changes what a stage will run. Exported code, which carries
no graphs, runs its own step code the same way
(:class:`~odedsl.runtime.program.CoefficientProbe`).

All times go through the graph in one pass, so every depth is covered: scalar nodes (those
that read only ``h``, ``t`` and constants) are computed with Python floats per time, exactly
as the runtime computes them (its exceptions included), and tensor nodes once on a batch with
one row per time. The state is generic and nonzero in every variable (``x * x / x`` and an
auxiliary ``v = 0`` made state-dependent expressions NaN or hid a factor that is infinite at
some layer, ``(1 + h / (t - 0.4)) * v``); residual functions return ones.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, fx

from odedsl.integrators.emit import residual
from odedsl.runtime.program import (
    CoefficientFault,
    _probe_residual,
    _probe_state,
    first_faults,
)

if TYPE_CHECKING:
    from odedsl.integrators.integrator import Integrator, IntegratorGraphs

__all__ = ["CoefficientCheck", "CoefficientFault", "coefficient_check", "reads_t"]


class _Rows:
    """A scalar with one float64 value per layer time (it reads ``t``)."""

    __slots__ = ("values",)

    def __init__(self, values: Tensor) -> None:
        self.values = values


#: Correctly rounded in IEEE arithmetic, so a float64 tensor op gives the Python float's value
#: bit for bit (and Python raises nothing for them: an overflow is inf in both).
_EXACT: dict[Callable[..., Any], Callable[..., Any]] = {
    operator.add: torch.add,
    operator.sub: torch.sub,
    operator.mul: torch.mul,
    operator.neg: torch.neg,
}


class _Batched(fx.Interpreter):
    """Runs a step graph at many layer times at once; records the first failure per time."""

    def __init__(self, graph: fx.GraphModule, rows: int, failures: dict[int, str]) -> None:
        super().__init__(graph)
        self.rows = rows
        self.failures = failures

    def _fail(self, row: int, message: str) -> None:
        self.failures.setdefault(row, message)

    def _scalar(self, target: Callable[..., Any], args: Sequence[Any], row: int) -> Any:
        try:
            value = target(*args)
        except (ArithmeticError, ValueError) as exc:
            self._fail(row, str(exc))
            return math.nan
        if isinstance(value, complex):  # a Python float ** 0.5 of a negative
            self._fail(row, "a coefficient is not real")
            return math.nan
        return value

    def _full(self, value: Any) -> Tensor:
        if isinstance(value, _Rows):
            return value.values
        return torch.full((self.rows,), float(value), dtype=torch.float64)

    def _column(self, value: Any) -> Any:
        return value.values.unsqueeze(1) if isinstance(value, _Rows) else value

    def _per_time(self, target: Callable[..., Any], args: tuple[Any, ...]) -> _Rows:
        """Each time's value with Python floats, as the runtime computes it."""
        if target in _EXACT:
            return _Rows(_EXACT[target](*(self._full(a) for a in args)))
        if target is operator.truediv:  # Python raises where the divisor is 0
            a, b = (self._full(x) for x in args)
            for row in torch.nonzero(b == 0).flatten().tolist():
                self._fail(row, "float division by zero")
            return _Rows(torch.where(b == 0, math.nan, a / b))
        if target is math.sqrt:  # correctly rounded too; Python raises below 0
            (a,) = (self._full(x) for x in args)
            for row in torch.nonzero(a < 0).flatten().tolist():
                self._fail(row, "math domain error")
            return _Rows(torch.where(a < 0, math.nan, torch.sqrt(a)))
        columns = [a.values.tolist() if isinstance(a, _Rows) else [a] * self.rows for a in args]
        values = [self._scalar(target, row, i) for i, row in enumerate(zip(*columns, strict=True))]
        return _Rows(torch.tensor(values, dtype=torch.float64))

    def call_function(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if target is torch.full_like and isinstance(args[1], _Rows):
            return torch.zeros_like(args[0]) + self._column(args[1])
        if target is residual or any(isinstance(a, Tensor) for a in args):
            return target(*(self._column(a) for a in args), **kwargs)
        if any(isinstance(a, _Rows) for a in args):
            return self._per_time(target, args)
        return self._scalar(target, args, 0)  # the same at every time: fails at the first


def reads_t(graph: fx.GraphModule) -> bool:
    """Whether the graph reads its ``t`` argument (``(..., h, t, call)``)."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    return bool(placeholders[-2].users)


def _first_failure(
    graph: fx.GraphModule, slots: int, h: float, times: Tensor
) -> tuple[int, str] | None:
    """The earliest row of ``times`` at which ``graph`` raises or returns a value that is not
    finite, with the message."""
    if not reads_t(graph):
        times = times[:1]  # the same values at every time
    failures: dict[int, str] = {}
    out = _Batched(graph, times.numel(), failures).run(
        *_probe_state(slots, times.numel()), h, _Rows(times), _probe_residual
    )
    rows = set(failures)
    for value in out if isinstance(out, tuple) else (out,):
        if isinstance(value, Tensor):
            finite = torch.isfinite(value).reshape(times.numel(), -1).all(dim=1)
            rows.update(int(i) for i in torch.nonzero(~finite).flatten())
    if not rows:
        return None
    row = min(rows)
    return row, failures.get(row, "a coefficient is not finite")


@dataclass(frozen=True)
class CoefficientCheck:
    """The dry run of one integrator with its parameter values, for any ``h``, depth and
    ``t0``: a picklable callable a program carries to the runtime."""

    graphs: IntegratorGraphs
    slots: int

    def __call__(
        self, h: float, depth: int, t0: float = 0.0
    ) -> tuple[CoefficientFault | None, CoefficientFault | None]:
        """The first failure of the forward steps and of the inverse steps (``None``: none).

        On the CPU whatever the default device: a model built under ``torch.device("meta")``
        (to be materialised later, as FSDP does) failed here, meta tensors having no values."""
        with torch.device("cpu"):
            return self._faults(h, depth, t0)

    def _faults(
        self, h: float, depth: int, t0: float
    ) -> tuple[CoefficientFault | None, CoefficientFault | None]:
        def find(graph: object, layers: range) -> tuple[int, str] | None:
            # t0 + n * h with n exact in float64: the runtime's float arithmetic, bit for bit
            n = torch.arange(layers.start, layers.stop, dtype=torch.float64)
            found = _first_failure(graph, self.slots, h, t0 + n * h)  # type: ignore[arg-type]
            return None if found is None else (layers[found[0]], found[1])

        return first_faults(self.graphs.step, self.graphs.first, h, depth, t0, find)


def coefficient_check(integrator: Integrator, params: dict[str, float]) -> CoefficientCheck:
    return CoefficientCheck(integrator.graphs(params), len(integrator.state))
