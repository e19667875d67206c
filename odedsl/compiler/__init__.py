"""Validated spec → runnable torch module (``odedsl.compile``)."""

from __future__ import annotations

import os
import re

import torch
from torch import fx

from odedsl.compiler.graph import build_graph_module
from odedsl.limits import Limits
from odedsl.runtime.modes import BackwardMode, BackwardSpec, SegmentLengthError, parse_backward
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec
from odedsl.spec.validate import ValidatedSpec

BACKWARDS = ("store", "invert", "checkpoint(k)")
#: The dtypes ``compile`` casts parameters to: real floating point (not complex, not integer).
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compile(
    source: str | os.PathLike[str] | ValidatedSpec,
    *,
    backward: BackwardSpec | None = None,
    dtype: torch.dtype | None = None,
    network: str | None = None,
    limits: Limits | None = None,
    **params: Value,
) -> fx.GraphModule:
    """Compile a spec (path, text or validated spec) to a ``torch.fx.GraphModule``.

    ``params`` override the network's parameters (``depth=64``); ``backward`` overrides every
    stage's mode (``"store"``, ``"invert"``, ``"checkpoint(4)"``, or any form a stage's
    ``backward_mode`` takes, as an exported ``build()`` does); ``dtype`` casts parameters.
    The module's ``input_shape`` and ``output_shape`` are those of one example, without the
    batch dimension.
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


#: ``checkpoint(k)`` with a whole number k, spaces allowed: where a k < 1 is, for the caret.
_CHECKPOINT_INT = re.compile(r"\s*checkpoint\s*\(\s*(-?[0-9]+)\s*\)\s*")


def _check_backward(backward: BackwardSpec | None) -> BackwardMode | None:
    """Parse a backward override with the runtime's own parser, so that ``compile`` takes the
    forms a stage's ``backward_mode`` and an exported ``build()`` take, with their messages: a
    wrong type is their TypeError, a bad value a :class:`DslValueError` (a ValueError too)."""
    from odedsl.diagnostics import (
        Diagnostic,
        DslValueError,
        SourceFile,
        Span,
        by_face,
        did_you_mean,
    )

    if backward is None:
        return None
    try:
        return parse_backward(backward)
    except SegmentLengthError as exc:
        # k < 1, shown like the spec's clause shows it: the override's text and a caret on k
        found = _CHECKPOINT_INT.fullmatch(backward) if isinstance(backward, str) else None
        span = None
        if found:
            start, end = found.span(1)
            span = Span(SourceFile("<backward>", backward), 1, start + 1, 1, end + 1)
        hint = (
            "checkpoint(k) keeps the state every k layers and recomputes the rest: "
            "k = 1 keeps them all, e.g. checkpoint(4)"
        )
        raise DslValueError([Diagnostic("E205", str(exc), span, hint)]) from None
    except ValueError as exc:
        message = str(exc)
    text = str(backward).replace(" ", "")
    if text.startswith("checkpoint("):
        hint = "k counts layers: a whole number in ASCII digits, e.g. checkpoint(4)"
    else:  # a close name; the message lists them all already
        hint = did_you_mean(text, ("store", "invert", "checkpoint")) or ""
        hint = hint if hint.startswith("did you mean") else ""
    # --backward takes text: the forms a command line can write, not the tuple of Python's
    cli = f"unknown backward mode {backward!r}; expected store, invert or checkpoint(k), k >= 1"
    message = by_face(cli, message)
    raise DslValueError([Diagnostic("E230", message, None, hint or None)]) from None
