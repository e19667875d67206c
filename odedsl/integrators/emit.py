"""IR → ``torch.fx`` graphs, and the :class:`~odedsl.runtime.program.IntegratorProgram` built
from them.

Every graph has the signature ``(state vars..., h, t, call)``: residual calls go through
``call(name, x, c)`` (see :func:`residual`), ``h`` and ``t`` are Python floats. Expressions
are memoised by structural equality of their (SSA, temporaries-inlined) IR, so a value is
computed once per graph — Heun's ``f(x, t)`` is evaluated once although both ``k1`` and the
update read it. Node names come from the DSL: temporaries keep theirs, updated state
variables are ``x_1``, ``x_2``...
"""

from __future__ import annotations

import keyword
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, fx

from odedsl.integrators import ir
from odedsl.integrators.derive import Derived, SsaStmt, Swap, Update
from odedsl.runtime.program import AffineUpdate, ResidualCall, State, Step, SwapUpdate

_OPS: dict[type, Callable[..., object]] = {
    ir.Add: operator.add,
    ir.Sub: operator.sub,
    ir.Mul: operator.mul,
    ir.Div: operator.truediv,
    ir.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[[float], float]] = {"sqrt": math.sqrt, "exp": math.exp}

Value = fx.Node | float | int


def residual(call: ResidualCall, name: str, x: Tensor, c: float) -> Tensor:
    """The one way a graph evaluates a residual function: ``call(name, x, c)``."""
    return call(name, x, c)


def _py_name(name: str) -> str:
    """A DSL name as an fx node name: fx writes names into Python source verbatim, so a state
    variable or temporary called ``lambda`` (a DSL identifier, a Python keyword) made the
    generated ``forward`` a SyntaxError; ``self`` would shadow the module argument."""
    return f"{name}_" if keyword.iskeyword(name) or name == "self" else name


class _Graph:
    """One graph under construction: placeholders, the CSE memo and node naming."""

    def __init__(self, state: Sequence[str]):
        self.graph = fx.Graph()
        taken = {"h", "t", "call"}  # a placeholder's name is its argument name: no repeats
        self.slots: list[fx.Node] = []
        for n in state:
            name = _py_name(n)
            while name in taken:
                name += "_"
            taken.add(name)
            self.slots.append(self.graph.placeholder(name))
        self.h = self.graph.placeholder("h")
        self.t = self.graph.placeholder("t")
        self.call = self.graph.placeholder("call")
        self.memo: dict[ir.Expr, Value] = {ir.H: self.h, ir.T: self.t}

    def node(self, target: Callable[..., object], args: tuple, name: str | None = None) -> fx.Node:
        name = _py_name(name) if name is not None else None
        return self.graph.create_node("call_function", target, args, name=name)

    def value(self, e: ir.Expr, name: str | None = None) -> Value:
        if e in self.memo:
            return self.memo[e]
        if isinstance(e, ir.Const):  # integral constants print as `2 * x`, not `2.0 * x`
            return int(e.value) if e.value.is_integer() and abs(e.value) < 2**53 else e.value
        if isinstance(e, ir.Var):
            raise KeyError(f"{e.name} (version {e.version}) is not available here")
        out: Value
        if isinstance(e, ir.Sym):
            raise KeyError(f"unbound parameter {e.name}")
        if isinstance(e, ir.Neg):
            out = self.node(operator.neg, (self.value(e.a),), name)
        elif isinstance(e, ir.Func):
            out = self.node(_FUNCS[e.name], (self.value(e.arg),), name)
        elif isinstance(e, ir.Call):
            args = (self.call, e.name, self.value(e.arg), e.offset)
            out = self.node(residual, args, name or e.name)
        else:
            a, b = self.value(e.a), self.value(e.b)  # type: ignore[attr-defined]
            out = self.node(_OPS[type(e)], (a, b), name)
        self.memo[e] = out
        return out

    def tensor(self, e: ir.Expr, like: Value, name: str | None = None) -> Value:
        """``e`` as a tensor: a scalar result is broadcast to the shape of ``like``."""
        v = self.value(e, name)
        if ir.is_scalar(e):
            return self.node(torch.full_like, (like, v), name)
        return v

    def finish(
        self, outputs: Sequence[Value], class_name: str, single: bool = False
    ) -> fx.GraphModule:
        self.graph.output(outputs[0] if single else tuple(outputs))
        self.graph.eliminate_dead_code()
        self.graph.lint()
        return fx.GraphModule(torch.nn.Module(), self.graph, class_name=class_name)


def _affine_forward(g: _Graph, u: Update, old: Value) -> Value:
    inc, name = u.increment, u.new.name
    if inc == ir.ZERO and u.factor == 1.0:  # e.g. momentum with gamma = 1: (1 - 1) * f
        return old
    if u.factor == 1.0 and isinstance(inc, ir.Neg):
        return g.node(operator.sub, (old, g.value(inc.a)), name)
    e = g.value(inc)
    if u.factor == 1.0:
        return g.node(operator.add, (old, e), name)
    if u.factor == -1.0:
        return g.node(operator.sub, (e, old), name)
    return g.node(operator.add, (g.node(operator.mul, (u.factor, old)), e), name)


def _affine_inverse(g: _Graph, u: Update, new: Value) -> Value:
    inc, name = u.increment, u.old.name
    if inc == ir.ZERO and u.factor == 1.0:
        return new
    if u.factor == 1.0 and isinstance(inc, ir.Neg):
        return g.node(operator.add, (new, g.value(inc.a)), name)
    e = g.value(inc)
    if u.factor == 1.0:
        return g.node(operator.sub, (new, e), name)
    if u.factor == -1.0:
        return g.node(operator.sub, (e, new), name)
    return g.node(operator.truediv, (g.node(operator.sub, (new, e)), u.factor), name)


def _locate(node: Value, s: SsaStmt) -> Value:
    """Record the DSL statement a node computes in ``node.meta`` (first statement wins)."""
    if isinstance(node, fx.Node):
        node.meta.setdefault("span", s.source.span)
    return node


def _input(g: _Graph, state: Sequence[str]) -> list[ir.Var]:
    slots = [ir.Var(n) for n in state]
    for v, node in zip(slots, g.slots, strict=True):
        g.memo[v] = node
    return slots


def emit_statements(
    stmts: Sequence[SsaStmt], state: Sequence[str], class_name: str
) -> fx.GraphModule:
    """A step computed statement by statement (forward of any kind, approximate inverse)."""
    g = _Graph(state)
    slots = _input(g, state)
    for s in stmts:
        if s.temp:
            _locate(g.value(s.expr, s.target), s)
            continue
        index = state.index(s.target) if s.target in state else 0
        node = g.tensor(ir.fold(s.rhs), g.memo[slots[index]], s.target)
        g.memo[s.new] = _locate(node, s)
        if s.target in state:
            slots[index] = s.new
        else:  # two-step `next`: the state rotates (prev, x) ← (x, next)
            slots = [slots[1], s.new]
    return g.finish([g.memo[v] for v in slots], class_name)


def emit_exact_forward(d: Derived, state: Sequence[str], class_name: str) -> fx.GraphModule:
    """The forward step written as its exactly invertible updates (so both agree bitwise)."""
    g = _Graph(state)
    slots = _input(g, state)
    pending = list(d.updates or ())
    for s in d.stmts:
        if s.temp:
            _locate(g.value(s.expr, s.target), s)
            continue
        u = pending.pop(0)
        assert isinstance(u, Update)
        if d.start:  # prev is zero on entry: next = e(x)
            node = g.tensor(u.increment, g.memo[slots[1]], u.new.name)
        else:
            node = _affine_forward(g, u, g.memo[slots[u.index]])
        g.memo[u.new] = _locate(node, s)
        slots[u.index] = u.new
    for sw in pending:
        assert isinstance(sw, Swap)
        slots[sw.a], slots[sw.b] = slots[sw.b], slots[sw.a]
    return g.finish([g.memo[v] for v in slots], class_name)


def emit_exact_inverse(d: Derived, state: Sequence[str], class_name: str) -> fx.GraphModule:
    """Undo the updates in reverse order: ``old = (new - e) / a``, swaps swapped back.

    A two-step inverse takes ``(x, next)`` (the state after the step) and returns ``(prev, x)``.
    """
    g = _Graph((state[1], "next") if state[0] == "prev" else state)
    slots = _final_slots(d, state)
    for v, node in zip(slots, g.slots, strict=True):
        g.memo[v] = node
    for u in reversed(d.updates or ()):
        if isinstance(u, Swap):
            slots[u.a], slots[u.b] = slots[u.b], slots[u.a]
            continue
        g.memo[u.old] = _affine_inverse(g, u, g.memo[u.new])
        slots[u.index] = u.old
    return g.finish([g.memo[v] for v in slots], class_name)


def emit_increments(d: Derived, state: Sequence[str], class_name: str) -> list[fx.GraphModule]:
    """One graph per update: its increment ``e`` from the state current at that point."""
    out = []
    slots = [ir.Var(n) for n in state]
    for k, u in enumerate(d.updates or ()):
        if isinstance(u, Swap):
            slots[u.a], slots[u.b] = slots[u.b], slots[u.a]
            continue
        g = _Graph(state)
        for v, node in zip(slots, g.slots, strict=True):
            g.memo[v] = node
        inc = g.tensor(u.increment, g.slots[u.index], "increment")
        out.append(g.finish([inc], f"{class_name}_{k}", single=True))
        slots[u.index] = u.new
    return out


def _final_slots(d: Derived, state: Sequence[str]) -> list[ir.Var]:
    slots = [ir.Var(n) for n in state]
    for u in d.updates or ():
        if isinstance(u, Swap):
            slots[u.a], slots[u.b] = slots[u.b], slots[u.a]
        else:
            slots[u.index] = u.new
    return slots


# ------------------------------------------------------------------ runtime objects
@dataclass(frozen=True)
class GraphStep:
    """A :data:`~odedsl.runtime.program.StepFn` backed by a GraphModule (picklable).

    Calls the graph's generated ``forward`` directly: these graphs are internal (odedsl
    registers no hooks on them; module hooks belong on the residual modules, which are still
    called normally), and ``nn.Module.__call__`` plus fx's call wrapper cost a few µs per
    call, paid several times per layer in a backward walk."""

    graph: fx.GraphModule

    def __call__(self, state: State, call: ResidualCall, h: float, t: float) -> State:
        return tuple(self.graph.forward(*state, h, t, call))


@dataclass(frozen=True)
class GraphIncrement:
    """An :class:`~odedsl.runtime.program.AffineUpdate` increment backed by a GraphModule."""

    graph: fx.GraphModule

    def __call__(self, state: State, call: ResidualCall, h: float, t: float) -> Tensor:
        return self.graph.forward(*state, h, t, call)  # direct, as GraphStep


@dataclass(frozen=True)
class StepGraphs:
    """The graphs of one step: forward, inverse (None for kind none), one per update."""

    forward: fx.GraphModule
    inverse: fx.GraphModule | None
    increments: tuple[fx.GraphModule, ...]


def emit_step(d: Derived, state: Sequence[str], name: str) -> StepGraphs:
    if d.updates is not None:
        return StepGraphs(
            emit_exact_forward(d, state, f"{name}_forward"),
            emit_exact_inverse(d, state, f"{name}_inverse"),
            tuple(emit_increments(d, state, f"{name}_increment")),
        )
    inverse = None
    if d.inverse is not None:
        inverse = emit_statements(d.inverse, state, f"{name}_inverse")
    return StepGraphs(emit_statements(d.stmts, state, f"{name}_forward"), inverse, ())


def make_step(d: Derived, graphs: StepGraphs) -> Step:
    updates = None
    if d.updates is not None:
        incs = iter(graphs.increments)
        updates = tuple(
            SwapUpdate(u.a, u.b)
            if isinstance(u, Swap)
            else AffineUpdate(u.index, u.factor, GraphIncrement(next(incs)))
            for u in d.updates
        )
    inverse = GraphStep(graphs.inverse) if graphs.inverse is not None else None
    return Step(GraphStep(graphs.forward), inverse, d.kind, updates)  # type: ignore[arg-type]


@dataclass(frozen=True)
class InitState:
    """Stage input → state: channel chunks, or the input plus auxiliaries.

    ``aux`` holds, per auxiliary variable, ``("copy", j)`` (the value of state var ``j``,
    not cloned: steps never write in place) or ``("fill", c)`` (a constant tensor).
    """

    parts: int
    split: bool
    two_step: bool
    aux: tuple[tuple[str, float], ...] = ()

    def __call__(self, x: Tensor) -> State:
        if self.two_step:
            return (torch.zeros_like(x), x)
        if self.split:
            if x.dim() < 2 or x.shape[1] % self.parts:
                shape = tuple(x.shape)
                raise ValueError(f"cannot split {shape} into {self.parts} equal channel chunks")
            return tuple(torch.chunk(x, self.parts, dim=1))
        out = [x]
        for kind, value in self.aux:
            if kind == "copy":
                out.append(out[int(value)])
            else:
                out.append(torch.zeros_like(x) if value == 0 else torch.full_like(x, value))
        return tuple(out)


@dataclass(frozen=True)
class Output:
    """State → stage output: the concatenated chunks, or one state variable."""

    split: bool
    index: int

    def __call__(self, state: State) -> Tensor:
        return torch.cat(state, dim=1) if self.split else state[self.index]
