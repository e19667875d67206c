"""Classify an integrator's step and derive its inverse, by the rules of DESIGN.md §3.

The statements are first put in SSA form with temporaries inlined (``x`` after its second
update is ``Var("x", 2)``), so every state update reads explicit versions. Then, per update:

* ``v = a*v + e`` (``+=``/``-=`` are ``a = 1``) with ``a`` a non-zero constant, ``e`` not
  reading ``v`` and every variable read at its current version → exactly invertible:
  ``v = (v - e) / a``, updates undone in reverse order. ``|a| < 1`` is *exact-unstable*: the
  inverse divides by ``a`` each layer, so rounding grows like ``|a|^-N``.
* A two-step ``next = c*prev + e(x)``, ``c ≠ 0``, is the update ``prev = c*prev + e(x)``
  followed by the swap ``(prev, x) ← (x, prev)``; the start step is the same with ``prev``
  zero (the runtime state starts as ``(0, x)``).
* Otherwise (an update reads its own target, as Euler, Heun and RK4 do) the step can be
  inverted approximately by the reverse-time scheme — the same statements with ``h → -h``
  started from ``t + h``, i.e. every time offset ``c → 1 - c`` — provided the scheme is
  consistent: every increment vanishes identically at ``h = 0`` (checked symbolically). For
  Euler this is Sander, Ablin & Peyré (2022), eq. 6, for Heun eq. 9; both agree with the
  authors' code (github.com/michaelsdr/resnet_nodes, ``resnet_ode/resnet_memory.py``:
  ``ResNetTransformMemory`` and ``ResNetTransformMemoryHeun``). Otherwise the kind is
  ``none``, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from odedsl.integrators import ir, poly
from odedsl.integrators.lower import Stmt
from odedsl.integrators.show import show

ZERO_TOL = 1e-12


@dataclass(frozen=True)
class SsaStmt:
    """A statement with temporaries inlined and state variables versioned."""

    target: str
    op: str
    expr: ir.Expr  # the increment for += / -=, the right-hand side for =
    temp: bool
    old: ir.Var | None  # the target's value before the statement (state updates only)
    new: ir.Var
    source: Stmt

    @property
    def rhs(self) -> ir.Expr:
        """The target's new value as a whole expression."""
        if self.op == "+=":
            return ir.Add(self.old or ir.ZERO, self.expr)
        if self.op == "-=":
            return ir.Sub(self.old or ir.ZERO, self.expr)
        return self.expr


@dataclass(frozen=True)
class Update:
    """``state[index] = factor * state[index] + increment`` (increment reads no ``old``)."""

    index: int
    factor: float
    increment: ir.Expr
    old: ir.Var
    new: ir.Var
    source: Stmt


@dataclass(frozen=True)
class Swap:
    a: int
    b: int


@dataclass(frozen=True)
class Derived:
    """A step's classification and everything needed to emit it (parameters bound)."""

    kind: str
    reason: str
    stmts: tuple[SsaStmt, ...]
    updates: tuple[Update | Swap, ...] | None = None
    inverse: tuple[SsaStmt, ...] | None = None  # the reverse-time scheme (approximate)
    growth: float = 1.0  # rounding growth per layer of the exact inverse
    start: bool = False  # the start step of a two-step scheme (prev is zero)


def source_text(s: Stmt) -> str:
    """A statement as the user wrote it (canonical spacing): for messages."""
    return f"{s.target} {s.op} {show(s.expr, 'dsl')}"


def to_ssa(stmts: tuple[Stmt, ...], state: tuple[str, ...]) -> tuple[SsaStmt, ...]:
    """Inline temporaries and version state variables."""
    env: dict[ir.Expr, ir.Expr] = {ir.Var(n): ir.Var(n) for n in state}
    out: list[SsaStmt] = []
    for s in stmts:
        e = ir.substitute(s.expr, env)
        if s.temp:
            env[ir.Var(s.target)] = e
            out.append(SsaStmt(s.target, s.op, e, True, None, ir.Var(s.target), s))
        elif s.target in state:
            old = env[ir.Var(s.target)]
            assert isinstance(old, ir.Var)
            new = ir.Var(s.target, old.version + 1)
            env[ir.Var(s.target)] = new
            out.append(SsaStmt(s.target, s.op, e, False, old, new, s))
        else:  # `next` of a two-step scheme
            out.append(SsaStmt(s.target, s.op, e, False, None, ir.Var(s.target), s))
    return tuple(out)


def bind(stmts: tuple[SsaStmt, ...], values: Mapping[str, float]) -> tuple[SsaStmt, ...]:
    """Substitute parameter values and fold constants. Raises ValueError when a residual's
    input no longer depends on the state (``f(gamma * x, t)`` with ``gamma = 0``)."""
    mapping = {ir.Sym(k): ir.Const(float(v)) for k, v in values.items()}
    out = tuple(replace(s, expr=ir.fold(ir.substitute(s.expr, mapping))) for s in stmts)
    for s in out:
        for call in ir.calls(s.expr):
            if poly.constant_input(call.arg):
                raise ValueError(
                    f"the input of residual function '{call.name}' in "
                    f"`{source_text(s.source)}` does not depend on the state with these "
                    "parameter values"
                )
    return out


def _affine(rhs: ir.Expr, old: ir.Var) -> tuple[float | None, str]:
    """The constant factor ``a`` of ``rhs = a*old + e``, or None and why not.

    A residual call that reads ``old`` makes the increment read it, even where the normal
    form cancels the call (``x + f(x, t) - f(x, t)``, ``h * f(x, t) / f(x, t)``): taking
    ``e`` as ``rhs`` at ``old = 0`` would then call the residual at another point."""
    if any(isinstance(n, ir.Call) and ir.reads(n.arg, old) for n in ir.walk(rhs)):
        return None, f"reads {old.name} in its own increment"
    try:
        split = poly.linear_part(poly.expand(rhs), old)
    except ZeroDivisionError:
        return None, "divides by zero"
    if split is None:
        return None, f"reads {old.name} in its own increment"
    a = poly.constant(split[0])
    if a is None:
        return None, _variable_factor(split[0], old)
    if abs(a) <= ZERO_TOL:
        return None, f"discards the old value of {old.name}"
    return a, ""


def _increment(rhs: ir.Expr, old: ir.Var) -> ir.Expr:
    """``e`` of ``rhs = a*old + e``: ``rhs`` at ``old = 0`` as written (the forward's own
    arithmetic), or the normal form's rest where ``old`` divides (``v * v / v`` is ``v``, but
    is 0/0 at ``v = 0``)."""
    divides = any(
        (isinstance(n, ir.Div) and ir.reads(n.b, old))
        or (isinstance(n, ir.Pow) and ir.reads(n.a, old))
        for n in ir.walk(rhs)
    )
    if not divides:
        return ir.fold(ir.substitute(rhs, {old: ir.ZERO}))
    split = poly.linear_part(poly.expand(rhs), old)
    assert split is not None  # _affine found the split
    return ir.fold(poly.to_expr(split[1]))


def _variable_factor(factor: poly.Poly, old: ir.Var) -> str:
    """Why a factor that is not a constant blocks the exact inverse, naming the factor: the
    inverse divides by one number fixed when it is derived, for every layer and depth."""
    expr = poly.to_expr(factor)
    what = f"multiplies {old.name} by `{show(expr, 'dsl')}`"
    state = sorted({v.name for v in ir.free_vars(expr)})
    if state:
        return (
            f"{what}, which reads {', '.join(state)} (an exact inverse divides by a constant "
            "factor, not by a tensor)"
        )
    if "t" in ir.syms(expr):
        return (
            f"{what}, which depends on t (an exact inverse divides by a constant factor, the "
            "same at every layer)"
        )
    return (
        f"{what}, which depends on h (an exact inverse divides by a constant factor, derived "
        "before the stage's h is known, and set_depth changes h: give the factor's value as an "
        "integrator parameter instead)"
    )


def classify_step(stmts: tuple[SsaStmt, ...], state: tuple[str, ...]) -> Derived:
    """Classify a one-step scheme (bound SSA statements)."""
    current = {n: ir.Var(n) for n in state}
    updates: list[Update | Swap] = []
    blocked: list[tuple[SsaStmt, str]] = []
    for s in stmts:
        if s.temp or s.old is None:
            continue
        rhs = s.rhs
        stale = sorted(v.name for v in ir.free_vars(rhs) if v != current.get(v.name, v))
        a, why = _affine(rhs, s.old)
        if stale:
            why = f"reads the value of {', '.join(stale)} from before its update in this step"
            a = None
        if a is None:
            blocked.append((s, why))
        else:
            updates.append(
                Update(state.index(s.target), a, _increment(rhs, s.old), s.old, s.new, s.source)
            )
        current[s.target] = s.new
    if not blocked:
        return _exact(stmts, tuple(updates))
    bad = _inconsistent(stmts)
    first, why = blocked[0]
    src = source_text(first.source)
    if bad is None:
        inverse = tuple(replace(s, expr=ir.reverse_time(s.expr)) for s in stmts)
        undefined = _undefined_reverse(inverse)
        if undefined is not None:
            s, node = undefined
            where = "" if s.source is first.source else f" in `{source_text(s.source)}`"
            reason = (
                f"`{src}` {why}, so only a reverse-time scheme could invert the step, but with "
                f"h → -h it would evaluate {show(node, 'dsl')}{where}, which has no real value"
            )
            return Derived("none", reason, stmts)
        reason = (
            f"`{src}` {why}: the inverse is the reverse-time scheme (h → -h from t + h, "
            "Sander et al. 2022, eqs. 6 and 9), exact only as h → 0"
        )
        return Derived("approximate", reason, stmts, inverse=inverse)
    if bad is first:
        reason = (
            f"`{src}`: the update does not vanish as h → 0 and {why}, so neither an exact "
            "inverse nor a reverse-time scheme exists"
        )
    else:
        reason = (
            f"`{src}` {why}, so only a reverse-time scheme could invert the step, but "
            f"`{source_text(bad.source)}` does not vanish as h → 0"
        )
    return Derived("none", reason, stmts)


def _undefined_reverse(inverse: tuple[SsaStmt, ...]) -> tuple[SsaStmt, ir.Expr] | None:
    """A reverse-time statement with a coefficient that is not real for a step h > 0 (the
    emitted inverse computes ``(-h)^0.5`` as a complex number), with that coefficient."""
    env = {"h": 0.01, "t": 0.0}
    for s in inverse:
        node = ir.first_undefined(s.expr, env)
        if node is not None:
            return s, node
    return None


def _exact(
    stmts: tuple[SsaStmt, ...], updates: tuple[Update | Swap, ...], start: bool = False
) -> Derived:
    growth = 1.0
    for u in updates:
        if isinstance(u, Update) and abs(u.factor) < 1.0:
            growth /= abs(u.factor)
    kind = "exact-unstable" if growth > 1.0 + ZERO_TOL else "exact"
    if kind == "exact":
        reason = "every update is v = a*v + e with a constant a ≠ 0 and e not reading v"
    else:
        reason = f"exact, but the inverse divides by factors of modulus < 1 (×{growth:.4g}/layer)"
    return Derived(kind, reason, stmts, updates=updates, growth=growth, start=start)


def _inconsistent(stmts: tuple[SsaStmt, ...]) -> SsaStmt | None:
    """The first update whose increment is not identically zero at h = 0, if any.

    At h = 0 a consistent step is the identity, so every version of a variable equals its
    input value: versions are merged and time offsets dropped before comparing.
    """

    def at_zero(n: ir.Expr) -> ir.Expr | None:
        if n == ir.H:
            return ir.ZERO
        if isinstance(n, ir.Var):
            return ir.Var(n.name)
        if isinstance(n, ir.Call):
            return ir.Call(n.name, n.arg, 0.0)
        return None

    for s in stmts:
        if s.temp or s.old is None:
            continue
        increment = ir.transform(ir.Sub(s.rhs, s.old), at_zero)
        try:
            if not poly.is_zero(poly.expand(increment), ZERO_TOL):
                return s
        except ZeroDivisionError:
            return s
    return None


def classify_two_step(stmts: tuple[SsaStmt, ...], start: bool) -> Derived:
    """Classify a two-step body (``next = c*prev + e(x)``) or its start step (prev = 0)."""
    (s,) = [s for s in stmts if not s.temp]
    prev, nxt = ir.Var("prev"), ir.Var("next")
    if start:
        update = Update(0, 1.0, s.expr, prev, nxt, s.source)
        return _exact(stmts, (update, Swap(0, 1)), start=True)
    c, why = _affine(s.expr, prev)
    if c is None:
        reason = (
            f"`{source_text(s.source)}` {why.replace('its own increment', 'e(x)')}: "
            "not of the form c*prev + e(x) with a constant c ≠ 0, so prev cannot be "
            "recovered from (x, next)"
        )
        return Derived("none", reason, stmts)
    inc = ir.fold(ir.substitute(s.expr, {prev: ir.ZERO}))
    return _exact(stmts, (Update(0, c, inc, prev, nxt, s.source), Swap(0, 1)))


def two_step_double_root(stmts: tuple[SsaStmt, ...], x: str) -> float | None:
    """The double characteristic root of a two-step body ``next = a*x + c*prev + h*(...)`` at
    h = 0 when it lies on the unit circle (±1), else None.

    Why: with ρ(ζ) = ζ² − aζ − c, a simple root on the unit circle keeps rounding errors
    bounded, a double one (a = 2, c = −1: the leapfrog recursion) makes them grow linearly in
    depth, in the forward pass itself and so in every backward mode. Undecided (None) when x
    or prev enter other than linearly once h = 0."""
    (s,) = [s for s in stmts if not s.temp]

    def h_to_zero(n: ir.Expr) -> ir.Expr | None:
        return ir.ZERO if n == ir.H else None

    try:
        expanded = poly.expand(ir.transform(s.expr, h_to_zero))
        by_prev = poly.linear_part(expanded, ir.Var("prev"))
        by_x = poly.linear_part(by_prev[1], ir.Var(x)) if by_prev else None
    except ZeroDivisionError:
        return None
    if by_prev is None or by_x is None:
        return None
    c, a = poly.constant(by_prev[0]), poly.constant(by_x[0])
    if c is None or a is None or abs(a * a + 4 * c) > ZERO_TOL or abs(abs(a / 2) - 1) > ZERO_TOL:
        return None
    return a / 2
