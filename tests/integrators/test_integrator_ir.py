"""The symbolic IR: normal forms decide zero and linearity; folding and printing keep the
source shape; time reversal maps offsets c → 1 - c."""

from __future__ import annotations

import pytest

from odedsl.integrators import ir, poly
from odedsl.integrators.show import show, time

x, v, h, t = ir.Var("x"), ir.Var("v"), ir.H, ir.T
f = ir.Call("f", x, 0.0)


def c(value: float) -> ir.Const:
    return ir.Const(value)


def test_normal_form_proves_identities() -> None:
    # h/2*(k + k) - h*k == 0, with k a residual call; f(x + 0*v) is the same atom as f(x)
    k = ir.Call("f", ir.Add(x, ir.Mul(c(0), v)), 0.0)
    e = ir.Sub(ir.Mul(ir.Div(h, c(2)), ir.Add(k, f)), ir.Mul(h, f))
    assert poly.is_zero(poly.expand(e))
    assert not poly.is_zero(poly.expand(ir.Sub(f, ir.Call("f", x, 1.0))))
    with pytest.raises(ZeroDivisionError):
        poly.expand(ir.Div(x, ir.Sub(h, h)))


def test_linear_part_extracts_the_factor() -> None:
    gamma = ir.Sym("gamma")
    rhs = ir.Add(ir.Mul(gamma, v), ir.Mul(ir.Sub(c(1), gamma), f))
    a, rest = poly.linear_part(poly.expand(rhs), v)
    assert poly.to_expr(a) == gamma and v not in ir.free_vars(poly.to_expr(rest))
    assert poly.linear_part(poly.expand(ir.Mul(v, v)), v) is None
    assert poly.linear_part(poly.expand(ir.Call("f", v, 0.0)), v) is None
    a, _ = poly.linear_part(poly.expand(ir.Div(ir.Add(v, f), c(2))), v)
    assert poly.constant(a) == 0.5


def test_fold_and_show_keep_the_source_shape() -> None:
    e = ir.fold(ir.Add(x, ir.Mul(ir.Div(ir.Neg(h), c(2)), ir.Add(f, f))))
    assert show(e) == "x - h/2·(f(x, t) + f(x, t))"
    assert show(e, "dsl") == "x - h / 2 * (f(x, t) + f(x, t))"
    assert show(ir.fold(ir.Mul(c(1), ir.Add(c(0), x)))) == "x"
    assert show(ir.Sub(x, ir.Sub(v, x))) == "x - (v - x)"
    assert show(ir.Pow(ir.Add(h, c(1)), c(2))) == "(h + 1)^2"
    assert [time(o) for o in (0, 1, 0.5, 2 / 3, -1)] == [
        "t",
        "t + h",
        "t + h/2",
        "t + 0.6666666667·h",
        "t - h",
    ]


def test_reverse_time_negates_h_and_mirrors_offsets() -> None:
    e = ir.Add(x, ir.Mul(h, ir.Call("f", ir.Add(x, ir.Mul(h, t)), 0.25)))
    r = ir.reverse_time(e)
    assert show(r) == "x - h·f(x - h·(t + h), t + 0.75·h)"
    assert ir.reverse_time(ir.reverse_time(ir.Call("f", x, 0.25))) == ir.Call("f", x, 0.25)


def test_structural_hashing_is_cse() -> None:
    a = ir.Call("f", ir.Add(x, ir.Mul(h, f)), 1.0)
    b = ir.Call("f", ir.Add(x, ir.Mul(h, ir.Call("f", x, 0.0))), 1.0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert ir.calls(ir.Add(a, f)) == [f, a]
