"""odedsl: deep residual networks as ODE discretisations, compiled to PyTorch.

The pipeline, one package per stage, each usable alone::

    spec.ode ──syntax.parse (Lark LALR)──▶ AST with spans ──syntax.imports──▶ all files
      ──spec.validate (pydantic, shapes)──▶ ValidatedSpec
      ──integrators (update rules → derived inverse, exact | approximate | none)
      ──compiler──▶ torch.fx.GraphModule: stem → ODE stages → transitions → head
      ──runtime: per-stage backward mode (store | checkpoint | invert)
      ──export (jinja2)──▶ readable model.py + train.py

Public API: :func:`parse`, :func:`load_spec`, :func:`compile`, :func:`save_checkpoint`,
:func:`load_checkpoint`, :func:`convert_state_dict`, :class:`DslError`, :class:`Limits`.
Names are imported on first use, so ``import odedsl`` stays light (no torch until needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from odedsl.checkpoints import convert_state_dict, load_checkpoint, save_checkpoint
    from odedsl.compiler import compile
    from odedsl.diagnostics import Diagnostic, DslError
    from odedsl.limits import Limits
    from odedsl.spec.load import load_spec
    from odedsl.spec.validate import ValidatedSpec
    from odedsl.syntax.parse import parse

_EXPORTS = {
    "Diagnostic": "odedsl.diagnostics",
    "DslError": "odedsl.diagnostics",
    "Limits": "odedsl.limits",
    "ValidatedSpec": "odedsl.spec.validate",
    "compile": "odedsl.compiler",
    "convert_state_dict": "odedsl.checkpoints",
    "load_checkpoint": "odedsl.checkpoints",
    "save_checkpoint": "odedsl.checkpoints",
    "load_spec": "odedsl.spec.load",
    "parse": "odedsl.syntax.parse",
}

__all__ = [
    "Diagnostic",
    "DslError",
    "Limits",
    "ValidatedSpec",
    "compile",
    "convert_state_dict",
    "load_checkpoint",
    "load_spec",
    "parse",
    "save_checkpoint",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'odedsl' has no attribute {name!r}")
