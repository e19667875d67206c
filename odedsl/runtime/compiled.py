"""Compiled residual evaluation: one graph per residual function, reused by every layer.

``torch.compile`` of a Python loop over N layers unrolls it: Dynamo traces every layer, so
compile time grows with depth and a change of N recompiles. A stage instead compiles the
*residual evaluation* once per residual name, as a function of the weights:
``(parameters, buffers, x) -> f(x)`` through :func:`torch.func.functional_call` on slot 0's
module (the *template*; every slot has the same structure). Each layer passes its own slot's
tensors (or, for ``interpolated``/HeunNet blends, the blended parameters), so all N layers,
every weight schedule and any depth N hit the same compiled graph. The depth loop and the
integrator's arithmetic stay in Python, which is what lets ``invert`` walk backwards with its
derived inverse: its recomputations call the same compiled function with grad enabled, and
their vector-Jacobian products run the compiled backward that AOTAutograd made for it.

A stage compiles this way when it is called inside ``torch.compile`` (the stage is then a
graph break: the layers before and after it are compiled as usual), or after
:func:`~odedsl.runtime.stage.compile_steps`. Graphs are specialised only on what varies
rarely: tensor shapes and dtypes, grad mode, train/eval and the parameter names.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

Tensors = dict[str, Tensor]
ResidualFn = Callable[[Tensors, Tensors, Tensor], Tensor]

_DEFAULT_OPTIONS: dict[str, Any] = {"dynamic": False}


class StepCompiler:
    """The compiled residual functions of one stage, made on first use and kept.

    ``options`` are passed to :func:`torch.compile` (``backend``, ``mode``, ``options``...).
    Each residual gets its own function object *and code object*: Dynamo keeps its cache (and
    its recompilation limit) per code object, so stages and residuals of different widths
    never evict each other's graphs. The template is a copy of slot 0 on the ``meta`` device,
    so no slot's tensors are baked in (every call swaps in all parameters and buffers).
    """

    def __init__(self, **options: Any) -> None:
        self.options = {**_DEFAULT_OPTIONS, **options}
        self._fns: dict[str, tuple[nn.Module, nn.Module, ResidualFn]] = {}

    def residual(self, name: str, slot0: nn.Module, training: bool) -> ResidualFn:
        """The compiled ``(params, buffers, x) -> f(x)`` of residual ``name``."""
        found = self._fns.get(name)
        if found is None or found[0] is not slot0:
            template = copy.deepcopy(slot0).to("meta")
            fn = torch.compile(_fresh_evaluate(name, template), **self.options)
            found = self._fns[name] = (slot0, template, fn)  # type: ignore[assignment]
        template = found[1]
        if template.training != training:
            template.train(training)
        return found[2]

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles keep the options; compiled functions are made again on use."""
        return {"options": self.options, "_fns": {}}

    def __repr__(self) -> str:
        return f"StepCompiler({self.options}, compiled={sorted(self._fns)})"


def _fresh_evaluate(name: str, template: nn.Module) -> ResidualFn:
    """``functional_call(template, (params, buffers), (x,))`` with a code object of its own."""

    def evaluate(params: Tensors, buffers: Tensors, x: Tensor) -> Tensor:
        return functional_call(template, (params, buffers), (x,))

    label = "".join(ch if ch.isalnum() else "_" for ch in name)
    code = evaluate.__code__.replace(co_name=f"residual_{label}")
    return types.FunctionType(code, evaluate.__globals__, code.co_name, None, evaluate.__closure__)
