"""fx graph → plain Python statements: the body of one generated step function.

The graphs of :meth:`Integrator.graphs` are walked node by node: each residual call and each
value the algebra named (``k1``, ``x_1``, ``increment``) becomes one assignment; unnamed
single-use arithmetic (fx's ``mul``, ``add_1``) is written inline with the fewest parentheses
that keep the graph's evaluation tree. Operations, operands and the order of tensor operations
are exactly the graph's, so the generated step computes the same values and the same gradients,
bit for bit, as the compiled one.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import fx

from odedsl.export.safety import (
    BUG,
    RESIDUAL_FUNCTION,
    Code,
    Locals,
    comment,
    literal,
    quoted,
    refuse,
)
from odedsl.integrators.emit import residual

_ATOM, _UNARY, _POW = 9, 3, 4
_BINARY: dict[Callable[..., object], tuple[str, int]] = {
    operator.add: ("+", 1),
    operator.sub: ("-", 1),
    operator.mul: ("*", 2),
    operator.truediv: ("/", 2),
    operator.pow: ("**", _POW),
}
_MATH = {math.sqrt: "math.sqrt", math.exp: "math.exp"}
_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|[0-9][0-9.e+-]*")
_UNNAMED = re.compile(r"(add|sub|mul|truediv|pow|neg|full_like|sqrt|exp)(_\d+)?")
#: Names a step function's body must not shadow.
RESERVED = ("state", "call", "h", "t", "torch", "math", "Tensor", "State")


@dataclass(frozen=True)
class _Expr:
    text: str
    prec: int


@dataclass
class Function:
    """One generated static method: signature, equations as comments, body lines."""

    name: Code
    returns: Code  # "State" or "Tensor"
    unpack: Code
    lines: list[Code]
    equations: list[Code] = field(default_factory=list)
    uses_math: bool = False
    doc: Code = field(default_factory=Code)


def _wrap(e: _Expr, paren: bool) -> str:
    return f"({e.text})" if paren else e.text


def _number(value: object) -> _Expr:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refuse(
            "E260",
            f"unexpected constant {type(value).__name__} in an integrator graph",
            hint=f"{BUG}: integrator graphs hold only int and float constants",
        )
    text = literal(value)
    return _Expr(text, _UNARY if text.startswith("-") else _ATOM)


class _Renderer:
    """Statements for one graph, inlining where that keeps the graph's order of evaluation.

    Tensor operations run in the generated code in exactly the graph's order: autograd sums
    the gradients of a tensor used twice in the order its uses were recorded, so reordering
    them would change the last bits of the gradients. A deferred (inlined) node is written
    inside the statement that uses it only if Python then evaluates the deferred nodes in
    graph order; otherwise the earliest one becomes a statement of its own first.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        self.index = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.names: dict[fx.Node, str] = {}
        self.deferred: list[fx.Node] = []
        self.locals = Locals(RESERVED)
        self.lines: list[Code] = []
        self.uses_math = False
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.scalar = set(placeholders[-3:-1])  # h, t and what is computed from them alone
        for n in gm.graph.nodes:
            if n.op == "call_function" and (n.target in _BINARY or n.target in _MATH):
                if all(a in self.scalar for a in n.args if isinstance(a, fx.Node)):
                    self.scalar.add(n)

    # ------------------------------------------------------------ evaluation order
    def _operands(self, node: fx.Node) -> list[object]:
        args = list(node.args[2:3] if node.target is residual else node.args)
        if node.target in (operator.add, operator.mul):
            left, right = self._first(args[0]), self._first(args[1])
            if right < left < float("inf"):
                args.reverse()  # IEEE + and * commute: the same value, in graph order
        return args

    def _first(self, a: object) -> float:
        """Graph index of the first deferred node evaluating ``a`` would run (inf: none)."""
        order = self._evals([a])
        return self.index[order[0]] if order else float("inf")

    def _evals(self, values: Sequence[object]) -> list[fx.Node]:
        """Deferred nodes evaluated, in Python's order, by expressions of ``values``."""
        out: list[fx.Node] = []
        for v in values:
            if isinstance(v, fx.Node) and v in self.deferred and v not in self.scalar:
                out += self._evals(self._operands(v))
                out.append(v)
        return out

    def statement(self, values: Sequence[object]) -> None:
        """Before a statement reading ``values``: materialise deferred tensor operations it
        would evaluate out of graph order (earliest first)."""
        while self._evals(values) != (
            pending := [n for n in self.deferred if n not in self.scalar]
        ):
            self.deferred.remove(pending[0])
            self.assign(pending[0])

    def assign(self, node: fx.Node) -> None:
        """``name = <node's expression>``; deferred nodes it reads are evaluated in it."""
        expr = self.render(node)
        local = self.locals.new(node.name)
        self.lines.append(Code(f"{local} = {expr.text}"))
        self.names[node] = local
        for used in self._deferred_in(node):
            self.deferred.remove(used)

    def _deferred_in(self, node: fx.Node) -> list[fx.Node]:
        """Every deferred node (tensor or scalar) written inside ``node``'s expression."""
        out: list[fx.Node] = []
        for a in node.args:
            if isinstance(a, fx.Node) and a in self.deferred:
                out += [*self._deferred_in(a), a]
        return out

    # ------------------------------------------------------------ rendering
    def value(self, a: object) -> _Expr:
        if isinstance(a, fx.Node):
            return self.render(a) if a in self.deferred else _Expr(self.names[a], _ATOM)
        return _number(a)

    def render(self, node: fx.Node) -> _Expr:
        target, ops = node.target, [self.value(a) for a in self._operands(node)]
        if target is residual:
            res = quoted(node.args[1], "residual name", rename=RESIDUAL_FUNCTION)
            c = self.value(node.args[3])
            return _Expr(f"call({res}, {ops[0].text}, {c.text})", _ATOM)
        if target in _BINARY:
            sym, p = _BINARY[target]
            a, b = ops
            left = a.prec < p or (p == _POW and a.prec <= p)
            right = b.prec < p if p == _POW else b.prec <= p
            simple = _SIMPLE.fullmatch(a.text) and _SIMPLE.fullmatch(b.text)
            if p == _POW and simple and not (left or right):
                return _Expr(f"{a.text}**{b.text}", p)  # ruff format hugs simple operands
            return _Expr(f"{_wrap(a, left)} {sym} {_wrap(b, right)}", p)
        if target is operator.neg:
            return _Expr(f"-{_wrap(ops[0], ops[0].prec <= _UNARY)}", _UNARY)
        if target is torch.full_like:
            return _Expr(f"torch.full_like({ops[0].text}, {ops[1].text})", _ATOM)
        if target in _MATH:
            self.uses_math = True
            return _Expr(f"{_MATH[target]}({ops[0].text})", _ATOM)
        raise refuse(
            "E260",
            f"cannot export the operation {target!r} of an integrator",
            hint=f"{BUG}: every operation odedsl.integrators.emit writes must be rendered here",
        )


def render_graph(gm: fx.GraphModule, name: str, equations: Sequence[str] = ()) -> Function:
    """The body of ``def name(state, call, h, t)`` computing what ``gm`` computes."""
    r = _Renderer(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    n_state = len(placeholders) - 3  # (state..., h, t, call)
    unpack: list[str] = []
    for i, node in enumerate(placeholders):
        if i < n_state:
            r.names[node] = r.locals.new(node.name) if node.users else Code("_")
            unpack.append(r.names[node])
        else:
            r.names[node] = ("h", "t", "call")[i - n_state]
    out: Code | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            value = node.args[0]
            items = list(value) if isinstance(value, tuple | list) else [value]
            r.statement(items)
            texts = [r.value(v).text for v in items]
            if not isinstance(value, tuple | list):
                out = Code(f"return {texts[0]}")
            else:
                out = Code(
                    f"return ({texts[0]},)" if len(texts) == 1 else f"return ({', '.join(texts)})"
                )
            continue
        if node.op != "call_function":
            raise refuse(
                "E260",
                f"cannot export fx node {node.format_node()}",
                hint=f"{BUG}: integrator graphs hold only placeholders, calls and the output",
            )
        if node.target is not residual and len(node.users) == 1 and _UNNAMED.fullmatch(node.name):
            r.deferred.append(node)
        else:
            r.statement(r._operands(node))
            r.assign(node)
    assert out is not None
    returns = Code("Tensor" if not out.startswith("return (") else "State")
    unpacked = Code(
        f"({unpack[0]},) = state" if len(unpack) == 1 else f"{', '.join(unpack)} = state"
    )
    return Function(
        Code(name), returns, unpacked, [*r.lines, out], [comment(e) for e in equations], r.uses_math
    )
