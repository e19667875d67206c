"""A validated integrator declaration and what the rest of the compiler asks of it.

:func:`analyse` checks a declaration (diagnostics E240) and returns an :class:`Integrator`;
the inverse is derived once per set of parameter values and cached. Nothing is emitted until
:meth:`Integrator.program` or :meth:`Integrator.graphs` is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from odedsl.diagnostics import Diagnostic, Diagnostics, DslError, Span, did_you_mean
from odedsl.integrators import dry_run, emit, ir, poly
from odedsl.integrators.derive import (
    Derived,
    Update,
    bind,
    classify_step,
    classify_two_step,
    to_ssa,
    two_step_double_root,
)
from odedsl.integrators.lower import Lowered, ParamSpec, Stmt, lower
from odedsl.integrators.show import number, show
from odedsl.runtime.program import IntegratorProgram, InverseKind
from odedsl.syntax import ast

ParamValues = Mapping[str, float]


@dataclass(frozen=True)
class Classification:
    """What the inverse promises (``kind``), why, and warnings for fragile inverses.

    ``warnings`` are self-contained messages (for the caller to locate, e.g. at a stage);
    ``diagnostics`` the same as W300 diagnostics located in the integrator's declaration.
    """

    kind: InverseKind
    reason: str
    warnings: tuple[str, ...] = ()
    growth: float = 1.0  # rounding growth per layer of the exact inverse (1: stable)
    diagnostics: tuple[Diagnostic, ...] = ()
    #: W301: the forward recursion itself grows rounding with depth (any backward mode)
    forward_rounding: str | None = None


@dataclass(frozen=True)
class IntegratorGraphs:
    """The emitted graphs: the per-layer step and, for two-step schemes, the first layer."""

    step: emit.StepGraphs
    first: emit.StepGraphs | None


@dataclass(frozen=True, eq=False)
class Integrator:
    """A checked integrator: names, parameters and the lowered statements it derives from.

    ``state`` is the runtime state layout (``("prev", "x")`` for two-step schemes),
    ``declared`` the variables as declared; ``offsets`` the time offsets ``c`` of the forward
    step's residual calls (``t + c*h``); approximate inverses call ``1 - c`` instead.
    """

    name: str
    state: tuple[str, ...]
    declared: tuple[str, ...]
    residuals: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    split_channels: bool
    two_step: bool
    offsets: tuple[float, ...]
    span: Span
    lowered: Lowered = field(repr=False)
    _cache: dict[object, object] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ parameters
    def param_values(
        self,
        overrides: Mapping[str, object] | None = None,
        *,
        diags: Diagnostics | None = None,
        span: Span | None = None,
    ) -> dict[str, float] | None:
        """Defaults merged with ``overrides``; problems go to ``diags`` (at ``span``) or raise.

        Returns None only when ``diags`` is given and a problem was reported.
        """
        sink = diags or Diagnostics()
        before = len(sink.items)
        specs = {p.name: p for p in self.params}
        values: dict[str, float] = {}
        for key, value in (overrides or {}).items():
            if key not in specs:
                hint = did_you_mean(key, specs) if specs else "it takes no parameters"
                sink.error("E230", f"integrator '{self.name}' has no parameter '{key}'", span, hint)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                what = f"parameter '{key}' of '{self.name}' must be a number, got {value!r}"
                sink.error("E204", what, span, f"pass a number, e.g. {key}=0.5")
            elif specs[key].type == "int" and value != int(value):
                what = f"parameter '{key}' of '{self.name}' must be an int, got {value!r}"
                sink.error("E204", what, span, f"pass a whole number, e.g. {key}={round(value)}")
            else:
                values[key] = float(value)
        for p in self.params:
            if p.name not in values and p.default is not None:
                values[p.name] = p.default
            elif p.name not in values and p.name not in (overrides or {}):
                sink.error(
                    "E203",
                    f"integrator '{self.name}' needs a value for '{p.name}'",
                    span,
                    f"it has no default: pass {p.name}=...",
                )
        if len(sink.items) > before:
            if diags is None:
                raise DslError(sink.items)
            return None
        return values

    def _values(self, params: ParamValues | None) -> dict[str, float]:
        values = self.param_values(params)
        assert values is not None
        return values

    def _derive(self, params: ParamValues | None) -> tuple[Derived, Derived | None]:
        values = self._values(params)
        key = ("derive", tuple(sorted(values.items())))
        if key not in self._cache:
            low = self.lowered
            body = bind(to_ssa(low.body, low.state), values)
            start = bind(to_ssa(low.start, low.state), values) if low.start else None
            if low.two_step:
                assert start is not None  # lowering requires a start block
                derived = (classify_two_step(body, False), classify_two_step(start, True))
            else:  # a start block: the first layer is its own step
                first = classify_step(start, low.state) if start else None
                derived = (classify_step(body, low.state), first)
            self._cache[key] = derived
        return self._cache[key]  # type: ignore[return-value]

    # ------------------------------------------------------------ the public questions
    def classify(
        self, params: ParamValues | None = None, *, depth: int | None = None
    ) -> Classification:
        """The inverse kind, why, and a W300 warning when the exact inverse amplifies rounding."""
        step, first = self._derive(params)
        # a start block runs once: a factor below 1 there multiplies rounding once, a bounded
        # growth, so its exact-unstable counts as exact (it was reported "×2/layer")
        once = first and ("exact" if first.kind == "exact-unstable" else first.kind)
        weakest = step if first is None or _RANK[step.kind] >= _RANK[once] else first
        located: tuple[Diagnostic, ...] = ()
        if step.growth > 1.0:
            located = (self._growth_warning(step, depth),)
        warnings = tuple(f"{d.message} ({d.hint})" for d in located)
        kind: InverseKind = weakest.kind  # type: ignore[assignment]
        return Classification(
            kind, weakest.reason, warnings, step.growth, located, self._forward_rounding(step)
        )

    def _forward_rounding(self, step: Derived) -> str | None:
        """W301's message when the two-step body's characteristic roots at h = 0 are a double
        root on the unit circle (the leapfrog recursion written as two-step)."""
        if not self.two_step:
            return None
        root = two_step_double_root(step.stmts, self.declared[0])
        if root is None:
            return None
        return (
            f"'{self.name}' is a two-step recursion whose characteristic roots at h = 0 are a "
            f"double root at {number(root)}: rounding errors grow linearly in depth, in the "
            "forward pass and so in every backward mode (measured for leapfrog in float32 at "
            "N = 1024: the stage output 3e-2 off its float64 value)"
        )

    def _growth_warning(self, d: Derived, depth: int | None) -> Diagnostic:
        weak = [u for u in d.updates or () if isinstance(u, Update) and abs(u.factor) < 1.0]
        var = "next" if self.two_step else weak[0].source.target
        per = " × ".join(f"1/{number(abs(u.factor))}" for u in weak)
        message = (
            f"inverting '{self.name}' divides {var} by {number(weak[0].factor)} every layer: "
            f"rounding errors grow by {per} ≈ {d.growth:.3g} per layer"
        )
        if depth is not None:
            base = f"(1/{number(abs(weak[0].factor))})" if len(weak) == 1 else f"{d.growth:.3g}"
            message += f", {base}^{depth} ≈ {d.growth**depth:.3g} over {depth} layers"
        hint = (
            "keep the stage shallow, move the factor towards 1, or use backward store or "
            "checkpoint(k)"
        )
        return Diagnostic("W300", message, weak[0].source.span, hint, "warning")

    def graphs(self, params: ParamValues | None = None) -> IntegratorGraphs:
        """The forward, inverse and increment GraphModules (``print(g.step.inverse.code)``)."""
        key = ("graphs", tuple(sorted(self._values(params).items())))
        if key not in self._cache:
            step, first = self._derive(params)
            self._cache[key] = IntegratorGraphs(
                emit.emit_step(step, self.state, self.name),
                emit.emit_step(first, self.state, f"{self.name}_start") if first else None,
            )
        return self._cache[key]  # type: ignore[return-value]

    def program(self, params: ParamValues | None = None) -> IntegratorProgram:
        """The runtime's view: state layout, init/output and the step(s) with their inverses."""
        key = ("program", tuple(sorted(self._values(params).items())))
        if key not in self._cache:
            step, first = self._derive(params)
            g = self.graphs(params)
            self._cache[key] = IntegratorProgram(
                self.name,
                self.state,
                self.residuals,
                self.offsets,
                self._init_state(self._values(params)),
                emit.Output(self.split_channels, 1 if self.two_step else 0),
                emit.make_step(step, g.step),
                emit.make_step(first, g.first) if first and g.first else None,
                _offsets_per_residual(step, first),
                dry_run.coefficient_check(self, self._values(params)),
            )
        return self._cache[key]  # type: ignore[return-value]

    def _init_state(self, values: dict[str, float]) -> emit.InitState:
        aux: list[tuple[str, float]] = []
        for e in self.lowered.inits[1:]:
            if isinstance(e, ir.Var):
                aux.append(("copy", float(self.declared.index(e.name))))
            elif e is not None:
                aux.append(("fill", ir.evaluate(e, values)))
        return emit.InitState(len(self.declared), self.split_channels, self.two_step, tuple(aux))

    def equations(self, params: ParamValues | None = None) -> tuple[list[str], list[str]]:
        """Readable forward and inverse equations (the inverse is empty for kind ``none``)."""
        low = self.lowered
        step, first = self._derive(params)
        forward = [f"start: {line}" for line in map(_equation, low.start)]
        forward += [_equation(s) for s in low.body]
        if self.two_step:
            forward.append(f"(prev, {self.declared[0]}) ← ({self.declared[0]}, next)")
        if (first is not None and first.kind == "none") or step.kind == "none":
            return forward, []
        inverse = self._inverse(low.body, step)
        if first is not None:  # the first layer is undone last
            inverse += [f"start: {line}" for line in self._inverse(low.start, first)]
        return forward, inverse

    def _inverse(self, stmts: tuple[Stmt, ...], derived: Derived) -> list[str]:
        if derived.kind == "approximate":
            return [_equation(s, ir.reverse_time(s.expr)) for s in stmts]
        return self._exact_inverse(stmts)

    def _exact_inverse(self, stmts: tuple[Stmt, ...]) -> list[str]:
        lines: list[str] = []
        x = self.declared[0]
        for s in reversed(to_ssa(stmts, self.lowered.state)):
            if s.temp:
                continue
            old = s.old or ir.Var("prev")
            split = poly.linear_part(poly.expand(s.rhs), old)
            a = poly.to_expr(split[0]) if split else ir.ONE
            if s.old is None and stmts is self.lowered.start:
                a = ir.ONE  # the start step: prev is zero
            e = ir.fold(ir.substitute(s.rhs, {old: ir.ZERO}))
            new = ir.Var("next" if s.old is None else s.target)
            if a == ir.ONE:
                value = ir.fold(ir.Sub(new, e))
            elif a == ir.Const(-1.0):
                value = ir.fold(ir.Sub(e, new))
            else:
                value = ir.Div(ir.fold(ir.Sub(new, e)), a)
            lines.append(f"{old.name} ← {show(value)}")
            if s.old is None:
                lines.insert(0, f"({x}, next) ← (prev, {x})")
        return lines


_RANK = {"exact": 0, "exact-unstable": 1, "approximate": 2, "none": 3}


def _equation(s: Stmt, expr: ir.Expr | None = None) -> str:
    e = s.expr if expr is None else expr
    if s.temp:
        return f"{s.target} = {show(e)}"
    if s.op == "+=":
        e = ir.fold(ir.Add(ir.Var(s.target), e))
    elif s.op == "-=":
        e = ir.fold(ir.Sub(ir.Var(s.target), e))
    return f"{s.target} ← {show(e)}"


#: The algebra inlines temporaries into the state updates: a chain where each temporary reads
#: the previous one twice doubles the expression each time, so its inlined size is bounded.
MAX_INLINED_NODES = 2_000


def _inlined_sizes_bounded(low: Lowered, diags: Diagnostics) -> bool:
    for stmts in (low.start, low.body):
        temp_size: dict[str, int] = {}
        for stmt in stmts:
            size = sum(
                temp_size.get(n.name, 1) if isinstance(n, ir.Var) else 1 for n in ir.walk(stmt.expr)
            )
            if size > MAX_INLINED_NODES:
                diags.error(
                    "E250",
                    f"'{stmt.target}' grows to {size:,} operations once the temporaries it reads "
                    f"are inlined (limit {MAX_INLINED_NODES:,})",
                    stmt.span,
                    "each temporary here reads the previous one more than once: simplify the chain",
                )
                return False
            if stmt.temp:
                temp_size[stmt.target] = size
    return True


def analyse(decl: ast.IntegratorDecl, diags: Diagnostics) -> Integrator | None:
    """Check ``decl`` (errors into ``diags``); None when it has errors."""
    low = lower(decl, diags)
    if low is None or not _inlined_sizes_bounded(low, diags):
        return None
    return Integrator(
        low.name,
        low.state,
        low.declared,
        low.residuals,
        low.params,
        low.split_channels,
        low.two_step,
        low.offsets,
        low.span,
        low,
    )


def _offsets_per_residual(*steps: Derived | None) -> dict[str, tuple[float, ...]]:
    """Each residual's forward time offsets, in the order the runtime's keys sort them."""
    found: dict[str, set[float]] = {}
    for step in steps:
        for stmt in step.stmts if step is not None else ():
            for node in ir.walk(stmt.expr):
                if isinstance(node, ir.Call):
                    found.setdefault(node.name, set()).add(float(node.offset))
    return {name: tuple(sorted(offsets)) for name, offsets in sorted(found.items())}
