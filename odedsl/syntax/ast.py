"""The syntax tree: one frozen dataclass per grammar rule, each with the span it came from.

Nothing here is evaluated: names are just names and expressions are trees. The validator
(``odedsl.spec``) gives them meaning; the integrator algebra (``odedsl.integrators``) reads
:class:`IntegratorDecl`.
"""

from __future__ import annotations

from dataclasses import dataclass

from odedsl.diagnostics import Span


@dataclass(frozen=True)
class Node:
    span: Span


# ------------------------------------------------------------------ expressions
@dataclass(frozen=True)
class Number(Node):
    value: int | float


@dataclass(frozen=True)
class String(Node):
    value: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Var(Node):
    name: str


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # one of + - * / // % ^
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str  # - or +
    operand: Expr


Expr = Number | String | Bool | Var | Call | BinOp | UnaryOp


# ------------------------------------------------------------------ layers and blocks
@dataclass(frozen=True)
class Arg(Node):
    name: str | None  # None for a positional argument
    value: Expr


@dataclass(frozen=True)
class LayerCall(Node):
    name: str
    args: tuple[Arg, ...]
    name_span: Span


@dataclass(frozen=True)
class LayerStmt(Node):
    call: LayerCall
    alias: str | None  # `conv2d(...) as K`: a name other layers can refer to


@dataclass(frozen=True)
class LayerSeq(Node):
    layers: tuple[LayerStmt, ...]


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: str | None
    default: Expr | None


@dataclass(frozen=True)
class BlockDecl(Node):
    name: str
    params: tuple[Param, ...]
    body: LayerSeq


# ------------------------------------------------------------------ networks and stages
@dataclass(frozen=True)
class InputDecl(Node):
    kind: str  # image | vector | sequence ...
    dims: tuple[Expr, ...]


@dataclass(frozen=True)
class Section(Node):
    """``stem``, ``transition`` or ``head``: a layer sequence at network level."""

    kind: str
    body: LayerSeq


@dataclass(frozen=True)
class Clause(Node):
    """A stage option: ``integrator``, ``step``, ``weights`` or ``backward``."""

    keyword: str
    name: str | None  # integrator/weights/backward name; None for `step`
    args: tuple[Arg, ...]
    value: Expr | None  # the step expression
    name_span: Span | None


@dataclass(frozen=True)
class ResidualClause(Node):
    binds: str | None  # `residual g = ...`; None binds the default residual `f`
    body: LayerCall | LayerSeq


@dataclass(frozen=True)
class StageDecl(Node):
    name: str
    depth: Expr
    clauses: tuple[Clause, ...]
    residuals: tuple[ResidualClause, ...]


NetItem = InputDecl | Section | StageDecl


@dataclass(frozen=True)
class NetworkDecl(Node):
    name: str
    params: tuple[Param, ...]
    items: tuple[NetItem, ...]


# ------------------------------------------------------------------ integrators
@dataclass(frozen=True)
class StateVar(Node):
    name: str
    init: Expr | None  # auxiliary variables: `v = 0`, `z = y`


@dataclass(frozen=True)
class Assignment(Node):
    target: str
    op: str  # = += -=
    value: Expr


@dataclass(frozen=True)
class StartBlock(Node):
    body: tuple[Assignment, ...]


@dataclass(frozen=True)
class IntegratorDecl(Node):
    name: str
    state: tuple[StateVar, ...]
    params: tuple[Param, ...]
    split_channels: bool
    two_step: bool
    start: StartBlock | None
    body: tuple[Assignment, ...]


# ------------------------------------------------------------------ files
@dataclass(frozen=True)
class ImportDecl(Node):
    path: str


@dataclass(frozen=True)
class Module(Node):
    """One parsed file."""

    imports: tuple[ImportDecl, ...]
    networks: tuple[NetworkDecl, ...]
    blocks: tuple[BlockDecl, ...]
    integrators: tuple[IntegratorDecl, ...]
