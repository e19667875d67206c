"""Layer sequences: expand blocks, validate each layer's arguments, infer shapes, count params.

Used for stems, transitions, heads and residual functions alike. Errors are collected: one bad
layer does not hide the next, but once a shape is unknown the shapes after it are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from odedsl.diagnostics import Diagnostics, Span, did_you_mean
from odedsl.limits import Limits
from odedsl.spec import layers as L
from odedsl.spec.evaluate import EvalError, Symbol, Value, coerce, evaluate
from odedsl.spec.model import LayerSpec, SequenceSpec
from odedsl.syntax import ast


class _TooLarge(Exception):
    """Stops an expansion that exceeded its limit (already reported)."""


@dataclass
class ExpansionBudget:
    """Statements expanded in all sequences of one network (``Limits.max_total_layers``).

    Each sequence is bounded by ``max_block_expansion``, but a network of many stages, each
    just under that bound, would still take minutes to check: the budget bounds the sum.
    """

    limit: int
    spent: int = 0
    exceeded: bool = False


@dataclass
class _Context:
    blocks: Mapping[str, ast.BlockDecl]
    limits: Limits
    diags: Diagnostics
    layers: list[LayerSpec] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    stochastic: bool = False
    start: Span | None = None
    budget: ExpansionBudget | None = None
    visited: int = 0  # layers and block calls expanded, failed ones included

    def fresh_name(self, prefix: str) -> str:
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{prefix}{self.counters[prefix]}"


def origin(span: Span) -> str:
    return f"{span.file}:{span.line}:{span.column}"


def expand_sequence(
    body: ast.LayerSeq | ast.LayerCall,
    env: Mapping[str, Value],
    in_shape: tuple[int, ...] | None,
    blocks: Mapping[str, ast.BlockDecl],
    limits: Limits,
    diags: Diagnostics,
    budget: ExpansionBudget | None = None,
) -> SequenceSpec | None:
    """Expand ``body`` into concrete layers; ``None`` when an error made its shape unknown.

    ``budget``, shared by the sequences of one network, bounds their total expansion.
    """
    if budget is not None and budget.exceeded:
        return None  # reported once, where it was exceeded
    ctx = _Context(blocks, limits, diags, start=body.span, budget=budget)
    stmts = (
        body.layers if isinstance(body, ast.LayerSeq) else (ast.LayerStmt(body.span, body, None),)
    )
    errors_before = len(diags.items)
    try:
        shape = _expand_stmts(stmts, env, in_shape, ctx, {}, ())
    except _TooLarge:
        return None
    if shape is None or in_shape is None or (len(diags.items) > errors_before and diags.has_errors):
        return None
    return SequenceSpec(
        layers=tuple(ctx.layers),
        in_shape=in_shape,
        out_shape=shape,
        parameters=sum(layer.parameters for layer in ctx.layers),
        stochastic=ctx.stochastic,
    )


def _expand_stmts(
    stmts: tuple[ast.LayerStmt, ...],
    env: Mapping[str, Value],
    shape: tuple[int, ...] | None,
    ctx: _Context,
    aliases: dict[str, LayerSpec],
    stack: tuple[str, ...],
) -> tuple[int, ...] | None:
    for stmt in stmts:
        call = stmt.call
        _spend(ctx)
        if call.name in ctx.blocks:
            if stmt.alias is not None:
                ctx.diags.error(
                    "E202",
                    f"'as {stmt.alias}' names a layer, not block '{call.name}'",
                    stmt.span,
                    "put `as` after a conv2d or linear layer",
                )
            shape = _expand_block(ctx.blocks[call.name], call, env, shape, ctx, stack)
            continue
        if call.name not in L.LAYERS:
            known = [*L.LAYERS, *ctx.blocks]
            ctx.diags.error(
                "E201",
                f"unknown layer or block '{call.name}'",
                call.name_span,
                did_you_mean(call.name, known)
                or f"the layers are {', '.join(L.LAYERS)}; a block is declared with "
                "`block NAME(...) { ... }`",
            )
            shape = None
            continue
        shape = _expand_layer(L.LAYERS[call.name], stmt, env, shape, ctx, aliases)
    return shape


def _spend(ctx: _Context) -> None:
    """Count one expanded statement (a layer or a block call); stop past either bound.

    Every statement counts, valid or not, layer or call: a block whose body is an error, or
    ``block e() { }``, called 2³⁰ times yields no layer but must stop as fast as one that does.
    """
    ctx.visited += 1
    if ctx.visited > ctx.limits.max_block_expansion:
        ctx.diags.error(
            "E250",
            f"more than {ctx.limits.max_block_expansion:,} layers after expanding blocks "
            "(block calls included)",
            ctx.start,
            "blocks calling blocks grow exponentially; raise "
            "ODEDSL_MAX_BLOCK_EXPANSION if this is intended",
        )
        raise _TooLarge
    budget = ctx.budget
    if budget is not None:
        budget.spent += 1
        if budget.spent > budget.limit:
            budget.exceeded = True
            ctx.diags.error(
                "E250",
                f"the network expands to more than {budget.limit:,} layers in all",
                ctx.start,
                "raise ODEDSL_MAX_TOTAL_LAYERS if this is intended",
            )
            raise _TooLarge


def _expand_block(
    block: ast.BlockDecl,
    call: ast.LayerCall,
    env: Mapping[str, Value],
    shape: tuple[int, ...] | None,
    ctx: _Context,
    stack: tuple[str, ...],
) -> tuple[int, ...] | None:
    if block.name in stack:
        chain = " → ".join([*stack[stack.index(block.name) :], block.name])
        ctx.diags.error(
            "E210",
            f"block '{block.name}' calls itself: {chain}",
            call.span,
            "blocks cannot recurse: write the repeated layers out, or call the block "
            "several times in a row",
        )
        return None
    if len(stack) >= ctx.limits.max_block_nesting:
        ctx.diags.error(
            "E250",
            f"blocks nested deeper than {ctx.limits.max_block_nesting}",
            call.span,
            "inline some of the blocks, or raise ODEDSL_MAX_BLOCK_NESTING",
        )
        raise _TooLarge
    bound = bind_arguments(block.name, block.params, call.args, env, call.span, ctx.diags)
    if bound is None:
        return None
    return _expand_stmts(block.body.layers, bound, shape, ctx, {}, (*stack, block.name))


def bind_arguments(
    what: str,
    params: tuple[ast.Param, ...],
    args: tuple[ast.Arg, ...],
    env: Mapping[str, Value],
    span: Span,
    diags: Diagnostics,
) -> dict[str, Value] | None:
    """Bind call arguments to declared parameters (positional, keyword, defaults, types)."""
    names = [p.name for p in params]
    takes = f"its parameters are {', '.join(names)}" if names else f"{what} takes no arguments"
    given: dict[str, tuple[ast.Arg, Value]] = {}
    ok = True
    for i, arg in enumerate(args):
        name = arg.name if arg.name is not None else (names[i] if i < len(names) else None)
        if name is None:
            diags.error(
                "E202",
                f"{what} takes {len(names)} argument(s), got {len(args)}",
                arg.span,
                f"remove the extra argument: {takes}",
            )
            ok = False
            continue
        if name not in names:
            diags.error(
                "E202",
                f"{what} has no parameter '{name}'",
                arg.span,
                did_you_mean(name, names) or takes,
            )
            ok = False
            continue
        if name in given:
            diags.error(
                "E202",
                f"argument '{name}' given twice",
                arg.span,
                "it is already given, by position or by name: remove one",
            )
            ok = False
            continue
        try:
            given[name] = (arg, _plain(evaluate(arg.value, env), arg.value.span))
        except EvalError as err:
            diags.add(err.diagnostic)
            ok = False
    bound: dict[str, Value] = {}
    for p in params:
        try:
            if p.name in given:
                arg, value = given[p.name]
                bound[p.name] = coerce(value, p.type, arg.value.span) if p.type else value
            elif p.default is not None:
                value = _plain(evaluate(p.default, bound), p.default.span)
                bound[p.name] = coerce(value, p.type, p.default.span) if p.type else value
            else:
                diags.error(
                    "E203",
                    f"{what}: missing argument '{p.name}'",
                    span,
                    f"pass it, e.g. `{what}({p.name}=...)`, or give it a default in the "
                    "declaration",
                )
                ok = False
        except EvalError as err:
            diags.add(err.diagnostic)
            ok = False
    return bound if ok else None


def _plain(value: Value | Symbol, span: Span) -> Value:
    """Values from ``evaluate`` without ``symbols``: never a Symbol."""
    assert not isinstance(value, Symbol), span
    return value


def _layer_args(
    kind: L.LayerKind, call: ast.LayerCall, env: Mapping[str, Value], ctx: _Context
) -> tuple[L.Args | None, dict[str, Span]]:
    """Evaluate and validate a registry layer's arguments; spans per argument for errors."""
    fields = list(kind.args.model_fields)
    raw: dict[str, object] = {}
    spans: dict[str, Span] = {}
    ok = True
    for i, arg in enumerate(call.args):
        if arg.name is None:
            if i >= len(kind.args.positional):
                ctx.diags.error(
                    "E202",
                    f"{kind.name} takes at most {len(kind.args.positional)} positional argument(s)",
                    arg.span,
                    f"name the argument: one of {', '.join(fields)}"
                    if fields
                    else f"{kind.name} takes no arguments",
                )
                ok = False
                continue
            name = kind.args.positional[i]
        else:
            name = arg.name
        if name not in fields:
            ctx.diags.error(
                "E202",
                f"{kind.name} has no argument '{name}'",
                arg.span,
                did_you_mean(name, fields) or f"{kind.name} takes no arguments",
            )
            ok = False
            continue
        if name in raw:
            ctx.diags.error(
                "E202",
                f"argument '{name}' given twice",
                arg.span,
                "it is already given, by position or by name: remove one",
            )
            ok = False
            continue
        try:
            value = evaluate(arg.value, env, symbols=True)
        except EvalError as err:
            ctx.diags.add(err.diagnostic)
            ok = False
            continue
        raw[name] = value.name if isinstance(value, Symbol) else value
        spans[name] = arg.value.span
    if not ok:
        return None, spans
    try:
        return kind.args.model_validate(raw), spans
    except ValidationError as exc:
        for e in exc.errors():
            loc = str(e["loc"][0]) if e["loc"] else ""
            where = spans.get(loc, call.span)
            message = e["msg"][0].lower() + e["msg"][1:]
            if e["type"] == "missing":
                ctx.diags.error(
                    "E203",
                    f"{kind.name}: missing argument '{loc}'",
                    call.span,
                    f"pass it, e.g. `{kind.name}({loc}=...)`",
                )
            else:
                hint = _allowed_hint(kind, loc)
                found = e.get("input")
                if e["type"] == "int_type" and isinstance(found, float) and found.is_integer():
                    # `linear(d / 2)`: a block's int parameter takes 4.0, a layer's does not
                    hint += f"; this is {found:g}.0, a float: `/` divides to a float, `//` does not"
                ctx.diags.error("E202", f"{kind.name}: argument '{loc}': {message}", where, hint)
        return None, spans


def _allowed_hint(kind: L.LayerKind, field_name: str) -> str:
    """The values ``field_name`` of ``kind`` accepts: its choices, or its type and range."""
    info = kind.args.model_fields.get(field_name)
    if info is None or info.annotation is None:  # pragma: no cover - pydantic names a field
        return f"see the arguments of {kind.name}: {', '.join(kind.args.model_fields)}"
    args = getattr(info.annotation, "__args__", ())
    if args and all(isinstance(a, str) for a in args):
        return "expected one of: " + ", ".join(args)
    types = set(args) if args else {info.annotation}
    if types <= {bool}:
        return f"{field_name} is true or false"
    if str in types:
        return f"{field_name} is the name of a layer (`as K`)"
    what = "a whole number" if int in types else "a number"
    bounds = []
    for m in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(m, attr, None)
            if bound is not None:
                bounds.append(
                    f"{sign} {bound:,}" if isinstance(bound, int) else f"{sign} {bound:g}"
                )
    return f"{field_name} is {what}" + (f" {' and '.join(bounds)}" if bounds else "")


def _expand_layer(
    kind: L.LayerKind,
    stmt: ast.LayerStmt,
    env: Mapping[str, Value],
    shape: tuple[int, ...] | None,
    ctx: _Context,
    aliases: dict[str, LayerSpec],
) -> tuple[int, ...] | None:
    call = stmt.call
    args, spans = _layer_args(kind, call, env, ctx)
    if args is None:
        return None
    if not _within_limits(kind, args, spans, call, ctx):
        return None
    ref: LayerSpec | None = None
    if isinstance(args, L.TransposeArgs):
        ref = aliases.get(args.of)
        if ref is None or ref.kind not in ("conv2d", "linear"):
            ctx.diags.error(
                "E200",
                f"transpose({args.of}): no conv2d or linear layer named "
                f"'{args.of}' before it in this sequence",
                spans.get("of", call.span),
                did_you_mean(args.of, aliases) or "name a layer with `as K`",
            )
            return None
    if shape is None:
        return None
    try:
        out = _transpose_shape(ref, shape) if ref is not None else kind.shape(shape, args)
    except L.ShapeError as err:
        ctx.diags.error("E220", f"{kind.name}: {err}", call.span, err.hint)
        return None
    if any(d > ctx.limits.max_spatial and i > 0 for i, d in enumerate(out)) or (
        out and out[0] > ctx.limits.max_width
    ):
        ctx.diags.error(
            "E250",
            f"{kind.name} output shape {list(out)} exceeds the size limits",
            call.span,
            "raise ODEDSL_MAX_WIDTH / ODEDSL_MAX_SPATIAL if intended",
        )
        return None
    params = kind.params(shape, args)
    if ref is not None and args.bias:  # type: ignore[union-attr]
        params = out[0] if len(out) == 3 else out[-1]
    layer = LayerSpec(
        kind=kind.name,
        name=ctx.fresh_name(kind.prefix),
        args=args.model_dump(),
        in_shape=shape,
        out_shape=out,
        parameters=params,
        origin=origin(call.span),
        ref=ref.name if ref is not None else None,
    )
    ctx.layers.append(layer)
    ctx.stochastic |= kind.stochastic
    if stmt.alias is not None:
        if kind.name not in ("conv2d", "linear"):
            ctx.diags.error(
                "E202",
                f"'as {stmt.alias}': only conv2d and linear layers can be named for reuse",
                stmt.span,
                f"remove `as {stmt.alias}`, or put it after a conv2d or linear layer",
            )
        elif stmt.alias in aliases:
            ctx.diags.error(
                "E120",
                f"layer name '{stmt.alias}' used twice",
                stmt.span,
                f"give this layer another name, e.g. `as {stmt.alias}2`",
            )
        else:
            aliases[stmt.alias] = layer
    return out


def _transpose_shape(ref: LayerSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Kᵀ maps K's output shape back to K's input shape."""
    if shape != ref.out_shape:
        raise L.ShapeError(
            f"transpose of {ref.name} expects its output shape {list(ref.out_shape)}, "
            f"got {list(shape)}",
            "apply transpose(K) to a tensor shaped like K's output",
        )
    if ref.kind == "conv2d" and ref.args["stride"] != 1:
        raise L.ShapeError(
            "transpose of a strided convolution is not supported",
            "use stride 1 for a reused kernel",
        )
    return ref.in_shape


def _within_limits(
    kind: L.LayerKind, args: L.Args, spans: dict[str, Span], call: ast.LayerCall, ctx: _Context
) -> bool:
    lim = ctx.limits
    checks = [
        ("out", lim.max_width, "ODEDSL_MAX_WIDTH"),
        ("groups", lim.max_width, "ODEDSL_MAX_WIDTH"),
        ("kernel", lim.max_kernel, "ODEDSL_MAX_KERNEL"),
        ("size", lim.max_spatial, "ODEDSL_MAX_SPATIAL"),
    ]
    for name, bound, env_name in checks:
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > bound:
            ctx.diags.error(
                "E250",
                f"{kind.name}: {name}={value} exceeds the limit of {bound}",
                spans.get(name, call.span),
                f"raise {env_name} if this is intended",
            )
            return False
    return True
