"""Polynomial normal form: the algebra behind the integrator classification.

An expression is expanded into a sum of monomials with float coefficients; a monomial is a
sorted product of *atoms* with integer powers. Atoms are the leaves (``Var``, ``Sym``) and
anything that cannot be expanded: residual calls (with a canonical argument, so
``f(x + 0*k)`` and ``f(x)`` are the same atom), scalar math functions of non-constants and
divisions by sums. Two expressions are algebraically equal (as far as this IR can tell) when
their normal forms are: that decides "is this increment identically 0 at h = 0" and "is this
update ``a * v + e`` with a constant ``a``".
"""

from __future__ import annotations

from collections.abc import Iterable

from odedsl.integrators import ir

Monomial = tuple[tuple[ir.Expr, int], ...]
Poly = dict[Monomial, float]

_MAX_POWER = 8  # x^k with larger integer k stays an atom (no blow-up)


def _key(atom: ir.Expr) -> str:
    return repr(atom)


def _mono(factors: Iterable[tuple[ir.Expr, int]]) -> Monomial:
    powers: dict[ir.Expr, int] = {}
    for atom, k in factors:
        powers[atom] = powers.get(atom, 0) + k
    return tuple(sorted(((a, k) for a, k in powers.items() if k), key=lambda p: _key(p[0])))


def _add(p: Poly, q: Poly, scale: float = 1.0) -> Poly:
    out = dict(p)
    for m, c in q.items():
        out[m] = out.get(m, 0.0) + scale * c
    return {m: c for m, c in out.items() if c != 0.0}


def _mul(p: Poly, q: Poly) -> Poly:
    out: Poly = {}
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            m = _mono(m1 + m2)
            out[m] = out.get(m, 0.0) + c1 * c2
    return {m: c for m, c in out.items() if c != 0.0}


def _atom(e: ir.Expr) -> Poly:
    return {((e, 1),): 1.0}


def constant(p: Poly) -> float | None:
    """The value of a constant polynomial, None if it has non-constant monomials."""
    if not p:
        return 0.0
    if set(p) == {()}:
        return p[()]
    return None


def expand(e: ir.Expr) -> Poly:
    """The normal form of ``e`` (raises ZeroDivisionError on division by a zero constant)."""
    if isinstance(e, ir.Const):
        return {(): e.value} if e.value != 0.0 else {}
    if isinstance(e, (ir.Var, ir.Sym)):
        return _atom(e)
    if isinstance(e, ir.Neg):
        return _add({}, expand(e.a), -1.0)
    if isinstance(e, ir.Add):
        return _add(expand(e.a), expand(e.b))
    if isinstance(e, ir.Sub):
        return _add(expand(e.a), expand(e.b), -1.0)
    if isinstance(e, ir.Mul):
        return _mul(expand(e.a), expand(e.b))
    if isinstance(e, ir.Div):
        return _div(expand(e.a), expand(e.b), e.b)
    if isinstance(e, ir.Pow):
        return _pow(expand(e.a), expand(e.b), e)
    if isinstance(e, ir.Func):
        arg = expand(e.arg)
        value = constant(arg)
        if value is not None:
            return {(): ir.MATH_FUNCTIONS[e.name](value)}
        return _atom(ir.Func(e.name, to_expr(arg)))
    if isinstance(e, ir.Call):
        return _atom(ir.Call(e.name, to_expr(expand(e.arg)), e.offset))
    raise TypeError(f"unknown IR node {e!r}")


def _div(p: Poly, q: Poly, source: ir.Expr) -> Poly:
    if not q:
        raise ZeroDivisionError("division by zero")
    if len(q) == 1:
        ((m, c),) = q.items()
        inverse = tuple((a, -k) for a, k in m)
        return _mul(p, {inverse: 1.0 / c})
    return _mul(p, _atom(ir.Pow(to_expr(q), ir.Const(-1.0))))


def _pow(base: Poly, exponent: Poly, source: ir.Expr) -> Poly:
    k = constant(exponent)
    b = constant(base)
    if k is not None and b is not None:
        value = ir.evaluate(ir.Pow(ir.Const(b), ir.Const(k)), {})
        return {(): value} if value != 0.0 else {}
    if k is not None and k == int(k) and 0 <= k <= _MAX_POWER:
        out: Poly = {(): 1.0}
        for _ in range(int(k)):
            out = _mul(out, base)
        return out
    if k is not None and k == int(k) and len(base) == 1:
        ((m, c),) = base.items()
        return {tuple((a, p * int(k)) for a, p in m): c ** int(k)}
    return _atom(ir.Pow(to_expr(base), to_expr(exponent)))


def to_expr(p: Poly) -> ir.Expr:
    """A canonical expression for ``p`` (monomials in a fixed order)."""
    terms: list[ir.Expr] = []
    for m in sorted(p, key=lambda m: [(_key(a), k) for a, k in m]):
        term: ir.Expr = ir.Const(p[m])
        for atom, k in m:
            factor = atom if k == 1 else ir.Pow(atom, ir.Const(float(k)))
            term = ir.Mul(term, factor)
        terms.append(term)
    if not terms:
        return ir.ZERO
    out = terms[0]
    for term in terms[1:]:
        out = ir.Add(out, term)
    return ir.fold(out)


def is_zero(p: Poly, tol: float = 1e-12) -> bool:
    """True when every coefficient is zero up to ``tol`` (relative to the largest, at least 1)."""
    scale = max([1.0, *(abs(c) for c in p.values())])
    return all(abs(c) <= tol * scale for c in p.values())


def atoms(p: Poly) -> set[ir.Expr]:
    return {a for m in p for a, _ in m}


def linear_part(p: Poly, var: ir.Var) -> tuple[Poly, Poly] | None:
    """Split ``p = a * var + rest`` with ``a`` and ``rest`` not reading ``var``.

    ``a`` is returned as a polynomial in the other atoms; None when ``var`` appears
    non-linearly or inside an atom (a residual call, a function, a power).
    """
    coeff: Poly = {}
    rest: Poly = {}
    for m, c in p.items():
        powers = dict(m)
        k = powers.pop(var, 0)
        if any(ir.reads(a, var) for a in powers):
            return None
        if k == 0:
            rest[m] = c
        elif k == 1:
            coeff[_mono(powers.items())] = c
        else:
            return None
    return coeff, rest


def constant_input(arg: ir.Expr) -> bool:
    """True when a residual call's argument reads no state once simplified (``0 * x``,
    ``x - x``): residual functions take tensors."""
    try:
        return ir.is_scalar(to_expr(expand(arg)))
    except ZeroDivisionError:
        return False
