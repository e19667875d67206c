"""The standard integrators, declared in odedsl itself (``odedsl/stdlib/integrators.ode``).

They go through exactly the path a user's integrator does (parse → check → derive), so the
standard library is also the first test of the algebra. Parsed once, on first use, rather
than at ``import odedsl``: building the Lark parser costs more than most commands need.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from odedsl.diagnostics import Diagnostics
from odedsl.integrators.integrator import Integrator, analyse
from odedsl.syntax.parse import parse

STDLIB_FILE = "integrators.ode"


def stdlib_text() -> str:
    return resources.files("odedsl").joinpath("stdlib", STDLIB_FILE).read_text()


def standard_library() -> dict[str, Integrator]:
    """Name → integrator for every integrator of the standard library (a fresh dict)."""
    return dict(_load())


@cache
def _load() -> dict[str, Integrator]:
    module = parse(stdlib_text(), f"<stdlib>/{STDLIB_FILE}")
    diags = Diagnostics()
    out: dict[str, Integrator] = {}
    for decl in module.integrators:
        integrator = analyse(decl, diags)
        if integrator is not None:
            out[integrator.name] = integrator
    diags.raise_if_errors()  # a broken standard library is a bug: fail loudly
    return out
