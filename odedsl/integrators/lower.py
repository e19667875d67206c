"""AST → IR for integrator declarations, with every rule checked and reported (E240).

Nothing here is evaluated as Python: names resolve to IR leaves, numbers to constants, and
residual calls must have the form ``name(expr, t + c*h)`` with a numeric ``c``. The rules are
those of DESIGN.md §3: state variables are declared in the parentheses, temporaries are
assigned once with ``=`` before being read, ``+=``/``-=`` only update state variables,
two-step integrators assign ``next`` (from ``prev`` and the state) and state their first
layer in a ``start`` block that reads the state alone; a one-step integrator may state its
first layer in a ``start`` block too (updates of its state, like its body). Whitelisted math
functions (:data:`~odedsl.integrators.ir.MATH_FUNCTIONS`: ``sqrt``, ``exp``) apply to scalars only.
"""

from __future__ import annotations

from dataclasses import dataclass

from odedsl.diagnostics import Diagnostics, Span, did_you_mean
from odedsl.integrators import ir
from odedsl.integrators.lower_expr import RESERVED, ExprLowerer, Scope, name_span
from odedsl.syntax import ast

PARAM_TYPES = ("float", "int")


@dataclass(frozen=True)
class ParamSpec:
    """An integrator constant: ``gamma: float = 0.9``; ``default`` None must be given."""

    name: str
    type: str
    default: float | None
    span: Span


@dataclass(frozen=True)
class Stmt:
    """An assignment to a state variable (``=``, ``+=``, ``-=``), ``next`` or a temporary."""

    target: str
    op: str
    expr: ir.Expr
    temp: bool
    span: Span


@dataclass(frozen=True)
class Lowered:
    """A checked declaration in IR form (``state`` in runtime order: ``(prev, x)`` for two-step)."""

    name: str
    declared: tuple[str, ...]
    state: tuple[str, ...]
    inits: tuple[ir.Expr | None, ...]
    params: tuple[ParamSpec, ...]
    split_channels: bool
    two_step: bool
    start: tuple[Stmt, ...]
    body: tuple[Stmt, ...]
    residuals: tuple[str, ...]
    offsets: tuple[float, ...]
    span: Span


def lower(decl: ast.IntegratorDecl, diags: Diagnostics) -> Lowered | None:
    """Lower ``decl``; report every problem into ``diags`` and return None if there was one."""
    before = sum(d.severity == "error" for d in diags.items)
    result = _Lowerer(decl, diags).run()
    return result if sum(d.severity == "error" for d in diags.items) == before else None


class _Lowerer(ExprLowerer):
    """Declaration-level and statement-level rules; expressions are :class:`ExprLowerer`'s."""

    # ------------------------------------------------------------ declaration
    def run(self) -> Lowered:
        d = self.decl
        declared = self.state_names()
        params = self.params(declared)
        if d.split_channels and len(declared) < 2:
            self.error(
                f"integrator '{d.name}' splits channels but has one state variable",
                d.span,
                "declare one state variable per channel chunk, e.g. (y, z)",
            )
        if d.two_step:
            if len(declared) != 1:
                self.error(
                    "a two-step integrator has exactly one state variable",
                    d.state[-1].span,
                    "its previous value is `prev`, its new value `next`",
                )
            if d.split_channels:
                self.error(
                    "an integrator cannot be both two_step and split channels",
                    d.span,
                    "remove one of the two options",
                )
            if d.start is None:
                self.error(
                    f"two-step integrator '{d.name}' needs a start block",
                    name_span(d.span, "integrator"),
                    "state the first layer from the state alone, "
                    "e.g. start { next = x + h * f(x, t) }",
                )
        inits = self.inits(declared)
        x = self.x()
        state = ("prev", x) if d.two_step else declared
        base: dict[str, ir.Expr] = {p.name: ir.Sym(p.name) for p in params}
        base |= {"h": ir.H, "t": ir.T}
        body_names = base | {n: ir.Var(n) for n in state}
        body = self.block(d.body, body_names, declared, "body", name_span(d.span, "integrator"))
        start: tuple[Stmt, ...] = ()
        if d.start is not None:  # two-step: reads the state alone; one-step: the whole state
            start_names = base | {x: ir.Var(x)} if d.two_step else body_names
            start_span = name_span(d.start.span, "start")
            start = self.block(d.start.body, start_names, declared, "start", start_span)
            targets = {s.target for s in d.start.body}
            if not d.two_step and not targets & set(declared):
                hint = (
                    "`next` is the new value of a two_step integrator: add `two_step` after "
                    "the parameter list, or update the state variables"
                    if "next" in targets
                    else "the first layer updates the state variables, like the body"
                )
                self.error(
                    f"the start block of '{d.name}' never updates its state", start_span, hint
                )
        if not d.body:
            example = f"next = prev + 2 * h * f({x}, t)" if d.two_step else f"{x} += h * f({x}, t)"
            self.error(
                f"integrator '{d.name}' has no update statements",
                d.span,
                f"add the step's updates, e.g. {example}",
            )
        elif not d.two_step:
            updated = {s.target for s in d.body} & set(declared)
            if not updated:
                self.error(
                    f"integrator '{d.name}' never updates its state",
                    d.span,
                    f"update a state variable with =, += or -=, e.g. {x} += h * f({x}, t)",
                )
            elif not d.split_channels and declared and declared[0] not in updated:
                self.error(
                    f"'{declared[0]}' is the stage output but is never updated",
                    d.state[0].span,
                    f"the first state variable is the stage's output: update it, "
                    f"e.g. {x} += h * ...",
                )
        return Lowered(
            d.name,
            declared,
            state,
            inits,
            params,
            d.split_channels,
            d.two_step,
            start,
            body,
            tuple(self.residuals),
            tuple(sorted(self.offsets)),
            d.span,
        )

    def state_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for sv in self.decl.state:
            span = name_span(sv.span, sv.name)
            if sv.name in ("h", "t"):
                self.error(
                    f"'{sv.name}' is reserved ({RESERVED[sv.name]})",
                    span,
                    "name the state variable otherwise, e.g. x, y or v",
                )
            elif sv.name in names:
                self.error(
                    f"state variable '{sv.name}' is declared twice",
                    span,
                    "give each state variable its own name",
                )
            elif self.decl.two_step and sv.name in ("prev", "next"):
                self.error(
                    f"'{sv.name}' is reserved in two-step integrators",
                    span,
                    "name the state variable otherwise, e.g. x: `prev` and `next` are its "
                    "previous and new values",
                )
            names.append(sv.name)
        self.declared = tuple(names)
        return self.declared

    def params(self, state: tuple[str, ...]) -> tuple[ParamSpec, ...]:
        out: list[ParamSpec] = []
        for p in self.decl.params:
            span = name_span(p.span, p.name)
            if p.name in ("h", "t") or p.name in state or p.name in {q.name for q in out}:
                what = "a state variable" if p.name in state else "already defined"
                what = RESERVED.get(p.name, what)
                self.error(
                    f"parameter '{p.name}' clashes with {what}", span, "rename the parameter"
                )
                continue
            type_ = p.type or "float"
            if type_ not in PARAM_TYPES:
                self.error(
                    f"integrator parameters are numbers; unknown type '{type_}'",
                    p.span,
                    did_you_mean(type_, PARAM_TYPES),
                )
            default = None
            if p.default is not None:
                default = self.constant(p.default, {}, "a parameter default")
                if default is not None and type_ == "int" and default != int(default):
                    self.error(
                        f"parameter '{p.name}' is an int but its default is {default:g}",
                        p.default.span,
                        f"give a whole number, or declare it `{p.name}: float`",
                    )
            out.append(ParamSpec(p.name, type_, default, p.span))
        return tuple(out)

    def constant(self, node: ast.Expr, names: dict[str, ir.Expr], what: str) -> float | None:
        e = self.expr(node, Scope(names, "const"))
        if e is None:
            return None
        try:
            return ir.evaluate(e, {})
        except (ZeroDivisionError, ValueError, OverflowError, KeyError) as exc:
            self.error(f"{what} cannot be computed: {exc}", node.span, "write it as a plain number")
            return None

    def inits(self, state: tuple[str, ...]) -> tuple[ir.Expr | None, ...]:
        out: list[ir.Expr | None] = []
        params = {p.name: ir.Sym(p.name) for p in self.decl.params}
        for i, sv in enumerate(self.decl.state):
            if sv.init is None:
                first = i == 0 or self.decl.split_channels
                out.append(None if first else ir.ZERO)  # auxiliaries start at zero
                continue
            if self.decl.split_channels:
                self.error(
                    f"with split channels '{sv.name}' is a channel chunk of the stage input; "
                    "it takes no initial value",
                    sv.init.span,
                    f"remove the initial value: write just `{sv.name}`",
                )
            elif i == 0:
                self.error(
                    f"'{sv.name}' is the stage input; it takes no initial value",
                    sv.init.span,
                    "auxiliary state variables come after it: (x, v = 0)",
                )
            elif isinstance(sv.init, ast.Var) and sv.init.name in state:
                if sv.init.name in state[:i]:
                    out.append(ir.Var(sv.init.name))
                    continue
                self.error(
                    f"'{sv.name}' can only start from a state variable declared before it",
                    sv.init.span,
                    f"declare '{sv.init.name}' before '{sv.name}' in the state list"
                    if sv.init.name != sv.name
                    else f"start it from a number or a parameter, e.g. {sv.name} = 0",
                )
            else:
                e = self.expr(sv.init, Scope(dict(params), "init"))
                if e is not None:
                    out.append(e)
                    continue
            out.append(None)
        return tuple(out)

    # ------------------------------------------------------------ statements
    def block(
        self,
        stmts: tuple[ast.Assignment, ...],
        names: dict[str, ir.Expr],
        state: tuple[str, ...],
        where: str,
        where_span: Span,
    ) -> tuple[Stmt, ...]:
        names = dict(names)
        out: list[Stmt] = []
        temps: set[str] = set()
        nexts = 0
        later = {s.target for s in stmts}
        two_step = self.decl.two_step
        for s in stmts:
            later.discard(s.target)
            span = name_span(s.span, s.target)
            target, temp = s.target, False
            if target in ("h", "t"):
                self.error(
                    f"cannot assign to '{target}' ({RESERVED[target]})",
                    span,
                    "assign a temporary of another name instead, e.g. k = ...",
                )
            elif target in {p.name for p in self.decl.params}:
                self.error(
                    f"'{target}' is a parameter, a constant of the integrator",
                    span,
                    "declare a state variable for a value that changes",
                )
            elif target in self.called:
                self.error(
                    f"'{target}' is a residual function; it cannot be assigned",
                    span,
                    "give the temporary another name, e.g. k",
                )
            elif two_step and target == "next":
                nexts += 1
                if s.op != "=":
                    self.error(
                        f"`next` is assigned with '=', not '{s.op}'",
                        span,
                        "write `next = ...`",
                    )
                elif nexts > 1:
                    self.error(
                        f"`next` is assigned twice in the {where} block",
                        span,
                        "assign it once; compute the parts in temporaries before it",
                    )
            elif two_step and (target in state or target == "prev"):
                self.error(
                    f"a two-step integrator assigns `next`, not '{target}'",
                    span,
                    "the state then rotates: (prev, x) ← (x, next)",
                )
            elif target in state:
                pass
            elif s.op != "=":
                hint = did_you_mean(target, state) if state else None
                self.error(
                    f"'{s.op}' updates a state variable; '{target}' is not one",
                    span,
                    hint or "declare it in the state list, or assign it with '='",
                )
            elif target in temps:
                self.error(
                    f"temporary '{target}' is assigned twice",
                    span,
                    "temporaries are defined once; use a new name",
                )
            else:
                temp = True
            e = self.expr(s.value, Scope(names, where, set(later)))
            if temp:
                temps.add(target)
                names[target] = ir.Var(target)
            if e is not None:
                out.append(Stmt(target, s.op, e, temp, s.span))
        if two_step and nexts == 0 and (stmts or where == "start"):
            self.error(
                f"the {where} block of a two-step integrator must assign `next`",
                where_span,
                f"add `next = ...` to the {where} block",
            )
        return tuple(out)
