"""Printing IR expressions: ``math`` style for ``odedsl show`` (``x ← x + h·f(x, t)``) and
``dsl`` style (the declaration's own syntax) for messages that quote a statement."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from odedsl.integrators import ir

Style = Literal["math", "dsl"]

_PREC = {ir.Add: 1, ir.Sub: 1, ir.Mul: 2, ir.Div: 2, ir.Neg: 3, ir.Pow: 4}


def _prec(e: ir.Expr) -> int:
    if isinstance(e, ir.Const) and e.value < 0:
        return 3
    return _PREC.get(type(e), 5)


def number(value: float) -> str:
    """``2`` rather than ``2.0``; short decimals otherwise."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def time(offset: float, style: Style = "math") -> str:
    """``t``, ``t + h``, ``t + h/2``, ``t + 0.3·h`` for a residual call's time."""
    if offset == 0:
        return "t"
    sign = "+" if offset > 0 else "-"
    c = abs(offset)
    frac = Fraction(c).limit_denominator(12)
    div = "/" if style == "math" else " / "
    mul = "·" if style == "math" else " * "
    if abs(float(frac) - c) < 1e-12 and frac.numerator == 1:
        step = "h" if frac.denominator == 1 else f"h{div}{frac.denominator}"
    else:
        step = f"{number(c)}{mul}h"
    return f"t {sign} {step}"


def show(e: ir.Expr, style: Style = "math") -> str:
    """Render ``e`` with the fewest parentheses that keep its meaning."""
    mul, div, pw = ("·", "/", "^") if style == "math" else (" * ", " / ", "^")

    def wrap(x: ir.Expr, ok: bool) -> str:
        text = go(x)
        return text if ok else f"({text})"

    def go(x: ir.Expr) -> str:
        if isinstance(x, ir.Const):
            return number(x.value)
        if isinstance(x, (ir.Sym, ir.Var)):
            return x.name
        if isinstance(x, ir.Call):
            return f"{x.name}({go(x.arg)}, {time(x.offset, style)})"
        if isinstance(x, ir.Func):
            return f"{x.name}({go(x.arg)})"
        if isinstance(x, ir.Neg):
            return "-" + wrap(x.a, _prec(x.a) >= 2 and not isinstance(x.a, ir.Neg))
        if isinstance(x, ir.Add):
            return f"{go(x.a)} + {wrap(x.b, _prec(x.b) >= 1 and _prec(x.b) != 3)}"
        if isinstance(x, ir.Sub):
            return f"{go(x.a)} - {wrap(x.b, _prec(x.b) > 1 and _prec(x.b) != 3)}"
        if isinstance(x, ir.Mul):
            right = _prec(x.b) >= 2 and _prec(x.b) != 3
            return f"{wrap(x.a, _prec(x.a) >= 2)}{mul}{wrap(x.b, right)}"
        if isinstance(x, ir.Div):
            return f"{wrap(x.a, _prec(x.a) >= 2)}{div}{wrap(x.b, _prec(x.b) > 3)}"
        if isinstance(x, ir.Pow):
            return f"{wrap(x.a, _prec(x.a) > 4)}{pw}{wrap(x.b, _prec(x.b) > 4)}"
        raise TypeError(f"unknown IR node {x!r}")

    return go(e)
