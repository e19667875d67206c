"""Validated spec → runnable torch module (``odedsl.compile``)."""

from __future__ import annotations

import os
import re

import torch
from torch import fx

from odedsl.compiler.graph import build_graph_module
from odedsl.limits import Limits
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec
from odedsl.spec.validate import ValidatedSpec

BACKWARDS = ("store", "invert", "checkpoint(k)")
#: The dtypes ``compile`` casts parameters to: real floating point (not complex, not integer).
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compile(
    source: str | os.PathLike[str] | ValidatedSpec,
    *,
    backward: str | None = None,
    dtype: torch.dtype | None = None,
    network: str | None = None,
    limits: Limits | None = None,
    **params: Value,
) -> fx.GraphModule:
    """Compile a spec (path, text or validated spec) to a ``torch.fx.GraphModule``.

    ``params`` override the network's parameters (``depth=64``); ``backward`` overrides every
    stage's mode (``"store"``, ``"invert"``, ``"checkpoint(4)"``); ``dtype`` casts parameters.
    The module's ``input_shape`` is the input shape without the batch dimension.
    """
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float64, got {dtype!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(
            f"dtype {dtype} cannot hold a network's parameters; expected "
            + ", ".join(map(str, DTYPES[:-1]))
            + f" or {DTYPES[-1]}"
        )
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be an odedsl.Limits, got {limits!r}")
    spec = load_spec(source, network=network, limits=limits, **params)
    return build_graph_module(spec, backward=_check_backward(backward), dtype=dtype)


#: ``checkpoint(k)`` with a whole number k, spaces allowed: k < 1 is an out-of-range value,
#: located on k, rather than an unknown mode.
_CHECKPOINT_INT = re.compile(r"\s*checkpoint\s*\(\s*([+-]?[0-9]+)\s*\)\s*")


def _check_backward(backward: str | None) -> str | None:
    """Validate a backward override with the runtime's own parser; bare `checkpoint` is k=1."""
    from odedsl.diagnostics import Diagnostic, DslError, SourceFile, Span
    from odedsl.runtime.modes import parse_backward

    if backward is None:
        return None
    if not isinstance(backward, str):
        raise TypeError(f"backward must be a string such as 'invert', got {backward!r}")
    found = _CHECKPOINT_INT.fullmatch(backward)
    if found and int(found.group(1)) < 1:
        # shown like a spec error: the override's text, a caret on k and a hint
        source = SourceFile("<backward>", backward)
        start, end = found.span(1)
        raise DslError(
            [
                Diagnostic(
                    "E205",
                    f"backward {backward!r}: the segment length k of checkpoint(k) must be a "
                    f"positive integer, got {int(found.group(1))}",
                    Span(source, 1, start + 1, 1, end + 1),
                    "checkpoint(k) keeps the state every k layers and recomputes the rest: "
                    "k = 1 keeps them all, e.g. checkpoint(4)",
                )
            ]
        )
    text = backward.replace(" ", "")
    try:
        return str(parse_backward("checkpoint(1)" if text == "checkpoint" else text))
    except (TypeError, ValueError):
        pass
    raise DslError(
        [
            Diagnostic(
                "E230",
                f"unknown backward mode {backward!r}",
                None,
                "expected store, invert or checkpoint(k)",
            )
        ]
    )
