"""A small symbolic IR for integrator update statements.

Expressions are frozen dataclasses, so equal trees hash equally: that *is* the structural
hashing the emitter uses for common-subexpression elimination. The IR mirrors the source
operators (``Add``, ``Sub``, ``Mul``, ``Div``, ``Pow``, ``Neg``) so that equations and
generated code read like the declaration; decisions that need algebra (is this increment
identically 0 at h = 0? is this update affine in v?) go through the polynomial normal form
of :mod:`odedsl.integrators.poly` instead.

Leaves: :class:`Const`, :class:`Sym` (the step ``h``, the time ``t`` and integrator
parameters: scalars) and :class:`Var` (state variables and temporaries: tensors; ``version``
numbers assignments in SSA form). :class:`Call` is a residual call ``name(arg, t + offset*h)``
and :class:`Func` a whitelisted scalar math function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

#: Scalar math functions allowed in integrator expressions, on scalar arguments only
#: (constants, parameters, ``h``, ``t``): enough for ``sqrt(h)``-style coefficients.
MATH_FUNCTIONS: dict[str, Callable[[float], float]] = {"sqrt": math.sqrt, "exp": math.exp}


@dataclass(frozen=True)
class Expr:
    """Base class of every IR node."""


@dataclass(frozen=True)
class Const(Expr):
    value: float


@dataclass(frozen=True)
class Sym(Expr):
    """A scalar symbol: ``h``, ``t`` or an integrator parameter."""

    name: str


@dataclass(frozen=True)
class Var(Expr):
    """A tensor: a state variable (``version`` counts its assignments) or a temporary."""

    name: str
    version: int = 0


@dataclass(frozen=True)
class Neg(Expr):
    a: Expr


@dataclass(frozen=True)
class Add(Expr):
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Sub(Expr):
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Mul(Expr):
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Div(Expr):
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Pow(Expr):
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Func(Expr):
    """A whitelisted scalar math function (:data:`MATH_FUNCTIONS`)."""

    name: str
    arg: Expr


@dataclass(frozen=True)
class Call(Expr):
    """Residual function ``name`` applied to ``arg`` at time ``t + offset * h``."""

    name: str
    arg: Expr
    offset: float


BINARY = (Add, Sub, Mul, Div, Pow)
H, T = Sym("h"), Sym("t")
ZERO, ONE = Const(0.0), Const(1.0)


# ------------------------------------------------------------------ traversal
def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, BINARY):
        return (e.a, e.b)
    if isinstance(e, Neg):
        return (e.a,)
    if isinstance(e, (Func, Call)):
        return (e.arg,)
    return ()


def rebuild(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """``e`` with its children replaced (same node type)."""
    if isinstance(e, BINARY):
        return type(e)(kids[0], kids[1])
    if isinstance(e, Neg):
        return Neg(kids[0])
    if isinstance(e, Func):
        return Func(e.name, kids[0])
    if isinstance(e, Call):
        return Call(e.name, kids[0], e.offset)
    return e


def walk(e: Expr) -> Iterator[Expr]:
    """Every node of ``e``, parents before children."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def transform(e: Expr, fn: Callable[[Expr], Expr | None]) -> Expr:
    """Rebuild ``e`` bottom-up; ``fn`` may replace a node (return None to keep it)."""
    memo: dict[Expr, Expr] = {}

    def go(node: Expr) -> Expr:
        if node in memo:
            return memo[node]
        kids = children(node)
        new = rebuild(node, tuple(go(k) for k in kids)) if kids else node
        out = fn(new)
        memo[node] = new if out is None else out
        return memo[node]

    return go(e)


def substitute(e: Expr, mapping: Mapping[Expr, Expr]) -> Expr:
    """Replace leaves (``Var``/``Sym``) simultaneously, by structural equality."""
    if not mapping:
        return e
    return transform(e, lambda n: mapping.get(n) if not children(n) else None)


def free_vars(e: Expr) -> frozenset[Var]:
    return frozenset(n for n in walk(e) if isinstance(n, Var))


def syms(e: Expr) -> frozenset[str]:
    return frozenset(n.name for n in walk(e) if isinstance(n, Sym))


def calls(e: Expr) -> list[Call]:
    """Residual calls in evaluation order (arguments first), without duplicates."""
    out: list[Call] = []

    def go(node: Expr) -> None:
        for k in children(node):
            go(k)
        if isinstance(node, Call) and node not in out:
            out.append(node)

    go(e)
    return out


def reads(e: Expr, var: Var) -> bool:
    return var in free_vars(e)


def is_scalar(e: Expr) -> bool:
    """True when ``e`` reads no tensor: a Python float at run time."""
    return not any(isinstance(n, (Var, Call)) for n in walk(e))


# ------------------------------------------------------------------ evaluation
def evaluate(e: Expr, env: Mapping[str, float]) -> float:
    """Numeric value of a scalar expression (raises KeyError, ZeroDivisionError, ValueError)."""
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Sym):
        return float(env[e.name])
    if not isinstance(e, (Neg, Func, *BINARY)):
        raise ValueError(f"not a scalar expression: {e}")
    return _node_value(e, [evaluate(k, env) for k in children(e)])


def _node_value(node: Expr, kids: list[float]) -> float:
    """One operator node's value from its children's values (the arithmetic that
    :func:`evaluate` and :func:`first_undefined` share)."""
    if isinstance(node, Neg):
        return -kids[0]
    if isinstance(node, Func):
        return MATH_FUNCTIONS[node.name](kids[0])
    return _apply(type(node), kids[0], kids[1])


def _apply(op: type, a: float, b: float) -> float:
    if op is Add:
        return a + b
    if op is Sub:
        return a - b
    if op is Mul:
        return a * b
    if op is Div:
        return a / b
    value = a**b
    if isinstance(value, complex):
        raise ValueError("complex power")
    return float(value)


def first_undefined(e: Expr, env: Mapping[str, float]) -> Expr | None:
    """The first scalar subexpression of ``e`` (children before parents) that has no real
    value at ``env`` (``(-h)^0.5``, ``sqrt(-h)``), or None. One pass over the tree; divisions
    by zero are left to the caller's numeric checks (they depend on the actual h)."""
    values: dict[Expr, float | None] = {}  # None: reads a tensor

    def go(node: Expr) -> float | None:
        if node in values:
            return values[node]
        if isinstance(node, Const):
            value: float | None = node.value
        elif isinstance(node, Sym):
            value = float(env[node.name]) if node.name in env else None
        else:
            kids = [go(k) for k in children(node)]
            value = None
            if not isinstance(node, (Var, Call)) and all(k is not None for k in kids):
                try:
                    value = _node_value(node, kids)  # type: ignore[arg-type]
                except ZeroDivisionError:
                    value = None
                except (ValueError, OverflowError):
                    raise _Undefined(node) from None
        values[node] = value
        return value

    try:
        go(e)
    except _Undefined as bad:
        return bad.node
    return None


class _Undefined(Exception):
    def __init__(self, node: Expr) -> None:
        self.node = node


# ------------------------------------------------------------------ light simplification
def fold(e: Expr) -> Expr:
    """Fold constants and neutral elements and pull negations outwards.

    Keeps the source shape (no expansion), so folded expressions stay readable and emit
    the same operations the user wrote. ``0 * e`` folds to 0 even when ``e`` is a tensor:
    callers that need a tensor handle scalar results (see :func:`is_scalar`).
    """
    return transform(e, _fold_node)


def _fold_node(e: Expr) -> Expr | None:
    if isinstance(e, Neg):
        if isinstance(e.a, Const):
            return Const(-e.a.value)
        if isinstance(e.a, Neg):
            return e.a.a
        if isinstance(e.a, Sub):
            return Sub(e.a.b, e.a.a)
        return None
    if isinstance(e, Func) and isinstance(e.arg, Const):
        try:
            return Const(MATH_FUNCTIONS[e.name](e.arg.value))
        except (ValueError, OverflowError):
            return None
    if not isinstance(e, BINARY):
        return None
    a, b = e.a, e.b
    if isinstance(a, Const) and isinstance(b, Const):
        try:
            return Const(_apply(type(e), a.value, b.value))
        except (ZeroDivisionError, ValueError, OverflowError):
            return None
    return _RULES[type(e)](a, b)


def _c(e: Expr, value: float) -> bool:
    return isinstance(e, Const) and e.value == value


def _neg(e: Expr) -> Expr:
    return _fold_node(Neg(e)) or Neg(e)


def _fold_add(a: Expr, b: Expr) -> Expr | None:
    if _c(a, 0):
        return b
    if _c(b, 0):
        return a
    if isinstance(b, Neg):
        return Sub(a, b.a)
    if isinstance(b, Const) and b.value < 0:
        return Sub(a, Const(-b.value))
    if isinstance(a, Neg):
        return Sub(b, a.a)
    return None


def _fold_sub(a: Expr, b: Expr) -> Expr | None:
    if _c(b, 0):
        return a
    if _c(a, 0):
        return _neg(b)
    if isinstance(b, Neg):
        return Add(a, b.a)
    if isinstance(b, Const) and b.value < 0:
        return Add(a, Const(-b.value))
    if isinstance(a, Neg):
        return _neg(Add(a.a, b))
    return None


def _fold_mul(a: Expr, b: Expr) -> Expr | None:
    if _c(a, 0) or _c(b, 0):
        return ZERO
    if _c(a, 1):
        return b
    if _c(b, 1):
        return a
    if _c(a, -1):
        return _neg(b)
    if _c(b, -1):
        return _neg(a)
    if isinstance(a, Neg):
        return _neg(_fold_node(Mul(a.a, b)) or Mul(a.a, b))
    if isinstance(b, Neg):
        return _neg(_fold_node(Mul(a, b.a)) or Mul(a, b.a))
    if isinstance(a, Const) and a.value < 0:
        return _neg(Mul(Const(-a.value), b))
    return None


def _fold_div(a: Expr, b: Expr) -> Expr | None:
    if _c(b, 1):
        return a
    if _c(a, 0) and not _c(b, 0):
        return ZERO
    if isinstance(a, Neg):
        return _neg(_fold_node(Div(a.a, b)) or Div(a.a, b))
    if isinstance(b, Neg):
        return _neg(_fold_node(Div(a, b.a)) or Div(a, b.a))
    return None


def _fold_pow(a: Expr, b: Expr) -> Expr | None:
    if _c(b, 1):
        return a
    if _c(b, 0):
        return ONE
    return None


_RULES: dict[type, Callable[[Expr, Expr], Expr | None]] = {
    Add: _fold_add,
    Sub: _fold_sub,
    Mul: _fold_mul,
    Div: _fold_div,
    Pow: _fold_pow,
}


# ------------------------------------------------------------------ time reversal
def reverse_time(e: Expr) -> Expr:
    """The same expression for the reverse-time scheme: ``h → -h``, ``t → t + h``.

    A residual call at ``t + c·h`` becomes one at ``(t + h) + c·(-h) = t + (1 - c)·h``.
    Applied to a whole step this gives the scheme of Sander et al. (2022), eqs. 6 and 9:
    the same statements run with step ``-h`` from ``t + h``.
    """

    def node(n: Expr) -> Expr | None:
        if n == H:
            return Neg(H)
        if n == T:
            return Add(T, H)
        if isinstance(n, Call):
            return Call(n.name, n.arg, 1.0 - n.offset)
        return None

    # Leaves first (transform is bottom-up, so the `h` inside `t + h` is not flipped again).
    return fold(transform(e, node))
