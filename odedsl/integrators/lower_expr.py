"""Lowering of integrator expressions: names, operators, math functions and residual calls.

Split from :mod:`odedsl.integrators.lower` (which owns the declaration and statement rules);
every problem is reported as E240 at the offending node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from odedsl.diagnostics import Diagnostics, Span, did_you_mean
from odedsl.integrators import ir, poly
from odedsl.syntax import ast


def name_span(span: Span, name: str) -> Span:
    """The span of a name at the start of a node (an assignment target, a parameter)."""
    return Span(span.source, span.line, span.column, span.line, span.column + len(name))


@dataclass
class Scope:
    """The names an expression may read, and where it is (body | start | time | const | init)."""

    names: dict[str, ir.Expr]
    where: str
    later: set[str] = field(default_factory=set)  # temporaries assigned further down


_MAX_CONSTANT = 1e15


def _numbers_only(e: ir.Expr) -> bool:
    if isinstance(e, ir.Const):
        return True
    if isinstance(e, ir.Neg):
        return _numbers_only(e.a)
    if isinstance(e, ir.Func):
        return _numbers_only(e.arg)
    if isinstance(e, ir.BINARY):
        return _numbers_only(e.a) and _numbers_only(e.b)
    return False


class ExprLowerer:
    """AST expressions → IR, collecting the residual names and time offsets they use."""

    declared: tuple[str, ...] = ()

    def __init__(self, decl: ast.IntegratorDecl, diags: Diagnostics):
        self.decl, self.diags = decl, diags
        self.residuals: list[str] = []
        self.offsets: set[float] = set()
        self.called = {n.func for n in _nodes(decl) if isinstance(n, ast.Call)} - set(
            ir.MATH_FUNCTIONS
        )

    def error(self, message: str, span: Span, hint: str | None = None) -> None:
        self.diags.error("E240", message, span, hint)

    def expr(self, node: ast.Expr, scope: Scope) -> ir.Expr | None:
        if isinstance(node, ast.Number):
            if abs(node.value) > _MAX_CONSTANT:  # also keeps float() from overflowing
                self.error(
                    "number too large for an integrator coefficient",
                    node.span,
                    f"coefficients stay below {_MAX_CONSTANT:g}",
                )
                return None
            return ir.Const(float(node.value))
        if isinstance(node, (ast.String, ast.Bool)):
            self.error(
                "integrator expressions are numeric",
                node.span,
                "use numbers, parameters, h, t, state variables and residual calls",
            )
            return None
        if isinstance(node, ast.Var):
            return self.name(node, scope)
        if isinstance(node, ast.UnaryOp):
            a = self.expr(node.operand, scope)
            return None if a is None else (ir.Neg(a) if node.op == "-" else a)
        if isinstance(node, ast.BinOp):
            return self.binop(node, scope)
        assert isinstance(node, ast.Call)
        if node.func in ir.MATH_FUNCTIONS:
            return self.math(node, scope)
        return self.residual(node, scope)

    def binop(self, node: ast.BinOp, scope: Scope) -> ir.Expr | None:
        ops = {"+": ir.Add, "-": ir.Sub, "*": ir.Mul, "/": ir.Div, "^": ir.Pow}
        if node.op not in ops:
            self.error(
                f"operator '{node.op}' is not allowed in integrator expressions",
                node.span,
                "use + - * / ^",
            )
        a, b = self.expr(node.left, scope), self.expr(node.right, scope)
        if a is None or b is None or node.op not in ops:
            return None
        if node.op == "^" and not ir.is_scalar(b):
            self.error(
                "an exponent must be a scalar (numbers, parameters, h, t)",
                node.span,
                "the state may be a base, not an exponent: "
                f"{self.x()}^2 is allowed, 2^{self.x()} is not",
            )
            return None
        if node.op == "/" and _numbers_only(b) and self.checked_constant(b, node.span) is not None:
            if ir.evaluate(b, {}) == 0:
                self.error(
                    "division by zero",
                    node.span,
                    "the divisor is a constant equal to 0: change it",
                )
                return None
        return self.checked_constant(ops[node.op](a, b), node.span)

    def checked_constant(self, e: ir.Expr, span: Span) -> ir.Expr | None:
        """A subexpression of numbers alone must have a finite, moderate value: `1/0`,
        `10^10^10` or `exp(1e9)` are errors here, not a crash at run time."""
        if not _numbers_only(e):
            return e
        try:
            value = ir.evaluate(e, {})
        except (ArithmeticError, ValueError):
            value = math.nan
        if not math.isfinite(value) or abs(value) > _MAX_CONSTANT:
            self.error(
                "this coefficient is undefined or too large",
                span,
                f"coefficients are finite and below {_MAX_CONSTANT:g}",
            )
            return None
        return e

    def name(self, node: ast.Var, scope: Scope) -> ir.Expr | None:
        n = node.name
        if scope.where == "time" and n in scope.names and n not in ("h", "t"):
            self.error(
                f"the time of a residual call is t + c*h with a numeric c; it cannot read '{n}'",
                node.span,
                "write the offset c as a number, e.g. t + h / 2",
            )
            return None
        if n in scope.names:
            return scope.names[n]
        if scope.where == "init" and n in self.declared:
            self.error(
                "an initial value is a number, a parameter, "
                "or the name of an earlier state variable",
                node.span,
                f"write it alone, e.g. ({self.x()}, v = {self.x()}) or ({self.x()}, v = 0): "
                "it is not computed from the state",
            )
            return None
        x = self.x()
        if self.decl.two_step and n == "next":
            self.error(
                "`next` is the value being computed; it cannot be read",
                node.span,
                f"compute it from `prev` and '{x}', keeping parts in temporaries",
            )
        elif self.decl.two_step and n == "prev" and scope.where == "start":
            self.error(
                "the start block states the first layer from the state alone; "
                "`prev` does not exist yet",
                node.span,
                f"use '{x}' alone, e.g. start {{ next = {x} + h * f({x}, t) }}",
            )
        elif n in self.called:
            self.error(f"'{n}' is a residual function", node.span, f"call it as {n}(state, t)")
        elif n in scope.later:
            self.error(
                f"'{n}' is read before it is assigned",
                node.span,
                f"move the assignment of '{n}' above this statement",
            )
        elif scope.where in ("const", "init") and n in ("h", "t", *self.pnames()):
            allowed = {"const": "numbers", "init": "numbers and parameters"}
            self.error(
                f"'{n}' cannot appear here: only {allowed[scope.where]}",
                node.span,
                "write a number here"
                if scope.where == "const"
                else "write a number or a parameter",
            )
        else:
            self.error(
                f"unknown name '{n}'",
                node.span,
                did_you_mean(n, scope.names)
                or "declare it as a state variable or a parameter, or assign it before it is read",
            )
        return None

    def x(self) -> str:
        """The first state variable's name, for examples in hints."""
        return self.declared[0] if self.declared else "x"

    def pnames(self) -> list[str]:
        return [p.name for p in self.decl.params]

    def math(self, node: ast.Call, scope: Scope) -> ir.Expr | None:
        if len(node.args) != 1:
            self.error(
                f"{node.func} takes one argument, got {len(node.args)}",
                node.span,
                f"write {node.func}(...) of one scalar, e.g. {node.func}(h)",
            )
            return None
        arg = self.expr(node.args[0], scope)
        if arg is not None and not ir.is_scalar(arg):
            self.error(
                f"{node.func} applies to scalars (numbers, parameters, h, t), not to the state",
                node.span,
                f"apply it to a coefficient, e.g. {node.func}(h) * f({self.x()}, t)",
            )
            return None
        return None if arg is None else self.checked_constant(ir.Func(node.func, arg), node.span)

    def residual(self, node: ast.Call, scope: Scope) -> ir.Expr | None:
        f = node.func
        if f in scope.names or f in ("h", "t"):
            what = "a state variable or temporary"
            if isinstance(scope.names.get(f), ir.Sym):
                what = RESERVED.get(f, "a parameter")
            free = [c for c in ("f", "g", "u", "w") if c not in scope.names]
            self.error(
                f"'{f}' is {what}, not a function",
                node.span,
                "give the residual function a name of its own"
                + (f", e.g. {free[0]}" if free else ""),
            )
            return None
        if scope.where in ("time", "const", "init"):
            where = "the time of a residual call" if scope.where == "time" else "a constant"
            self.error(
                f"{where} cannot call the residual function '{f}'",
                node.span,
                "call residual functions in the update statements and temporaries only"
                if scope.where != "time"
                else "write the time as t + c*h with a number c, e.g. t + h / 2",
            )
            return None
        if len(node.args) != 2:
            self.error(
                f"residual function '{f}' takes 2 arguments (state, time), got {len(node.args)}",
                node.span,
                f"write {f}(x, t)",
            )
            return None
        arg = self.expr(node.args[0], scope)
        when = self.expr(node.args[1], Scope(scope.names, "time"))
        if arg is not None and (ir.is_scalar(arg) or poly.constant_input(arg)):
            x = self.x()
            self.error(
                f"the input of residual function '{f}' must be computed from the state",
                node.args[0].span,
                f"pass a state variable, e.g. {f}({x}, t)"
                if ir.is_scalar(arg)
                else "this input simplifies to a constant",
            )
            return None
        if arg is None or when is None:
            return None
        offset = self.offset(when)
        if offset is None:
            self.error(
                "the time of a residual call must be t + c*h with a constant c",
                node.args[1].span,
                "e.g. t, t + h, t + h / 2",
            )
            return None
        if not 0.0 <= offset <= 1.0:
            self.error(
                f"the time of a residual call must lie within the layer, t + c*h with "
                f"0 <= c <= 1 (got c = {offset:g})",
                node.args[1].span,
                "weights are defined from t to t + h",
            )
            return None
        if f not in self.residuals:
            self.residuals.append(f)
        self.offsets.add(offset)
        return ir.Call(f, arg, offset)

    @staticmethod
    def offset(when: ir.Expr) -> float | None:
        try:
            p = poly.expand(when)
        except ZeroDivisionError:
            return None
        t_term, h_term = ((ir.T, 1),), ((ir.H, 1),)
        if p.get(t_term) != 1.0 or set(p) - {t_term, h_term}:
            return None
        return p.get(h_term, 0.0) + 0.0  # + 0.0 turns -0.0 into 0.0


RESERVED = {"h": "the step size", "t": "the layer time"}


def _nodes(decl: ast.IntegratorDecl) -> list[ast.Node]:
    """Every expression node of a declaration (for the pre-pass collecting called names)."""
    roots: list[ast.Expr] = [s.value for s in decl.body]
    roots += [s.value for s in (decl.start.body if decl.start else ())]
    roots += [sv.init for sv in decl.state if sv.init is not None]
    out: list[ast.Node] = []
    while roots:
        n = roots.pop()
        out.append(n)
        if isinstance(n, ast.Call):
            roots.extend(n.args)
        elif isinstance(n, ast.BinOp):
            roots.extend((n.left, n.right))
        elif isinstance(n, ast.UnaryOp):
            roots.append(n.operand)
    return out
