"""ODE stages: depth, step, integrator and its constants, weights in depth, backward mode,
residual functions, the state's shape and the inverse the algebra derived for it."""

from __future__ import annotations

from collections.abc import Mapping

from odedsl.diagnostics import Diagnostics, Span, did_you_mean
from odedsl.integrators import Integrator
from odedsl.integrators.dry_run import coefficient_check
from odedsl.limits import Limits
from odedsl.runtime.weights import WeightSchedule
from odedsl.spec.evaluate import EvalError, Value, coerce, evaluate
from odedsl.spec.model import SequenceSpec, StageSpec
from odedsl.spec.sequences import ExpansionBudget, expand_sequence, origin
from odedsl.syntax import ast

WEIGHTS = ("tied", "untied", "shared", "interpolated")
BACKWARDS = ("store", "checkpoint", "invert")


def validate_stage(
    decl: ast.StageDecl,
    env: Mapping[str, Value],
    shape: tuple[int, ...] | None,
    integrators: Mapping[str, Integrator],
    blocks: Mapping[str, ast.BlockDecl],
    limits: Limits,
    diags: Diagnostics,
    budget: ExpansionBudget | None = None,
) -> StageSpec | None:
    """Check one stage; ``shape`` is its input shape (``None`` if an earlier error hid it)."""
    depth = _int(
        decl.depth,
        env,
        diags,
        "depth",
        low=1,
        high=limits.max_depth,
        hint="raise ODEDSL_MAX_DEPTH if this is intended",
    )
    clauses = _unique_clauses(decl, diags)

    integrator, int_params = _integrator(clauses.get("integrator"), decl, integrators, env, diags)
    step = 1.0 / depth if depth else None
    if "step" in clauses:
        step = _step(clauses["step"], env, diags)
    weights, weights_k = _weights(clauses.get("weights"), env, depth, diags)
    backward, every = _backward(clauses.get("backward"), env, depth, diags)
    if integrator is None or depth is None or step is None or weights is None or backward is None:
        return None

    state_shape = _state_shape(integrator, shape, decl, diags)
    residuals = _residuals(decl, integrator, env, state_shape, blocks, limits, diags, budget)
    if residuals is None or state_shape is None or shape is None:
        return None

    integrator_span = clauses["integrator"].span if "integrator" in clauses else decl.span
    try:
        cls = integrator.classify(int_params, depth=depth)
        forward_fault, inverse_fault = coefficient_check(integrator, int_params)(step, depth)
    except (ArithmeticError, ValueError, RecursionError) as exc:
        forward_fault, inverse_fault = exc, None
    backward_clause = clauses.get("backward")
    if forward_fault is not None:
        diags.error(
            "E240",
            f"stage '{decl.name}': integrator '{integrator.name}' fails on its coefficients "
            f"with h = {step:g} ({forward_fault})",
            integrator_span,
            "check divisions, powers and residual inputs in the integrator, and its "
            "parameter values",
        )
        return None
    if inverse_fault is not None and backward == "invert":
        diags.error(
            "E240",
            f"stage '{decl.name}': the inverse of integrator '{integrator.name}' fails on its "
            f"coefficients with h = {step:g} ({inverse_fault})",
            backward_clause.span if backward_clause else integrator_span,
            "use backward store or checkpoint(k), which never run the inverse",
        )
        return None
    if backward == "invert" and cls.kind == "none":
        diags.error(
            "E231",
            f"stage '{decl.name}': integrator '{integrator.name}' has no inverse ({cls.reason})",
            backward_clause.span if backward_clause else decl.span,
            "without an inverse, use `backward store` (the default: keeps every layer's "
            "state) or `backward checkpoint(k)` (keeps every k-th state, recomputes the rest)",
        )
        return None
    if cls.forward_rounding is not None:
        diags.warning(
            "W301",
            f"stage '{decl.name}': {cls.forward_rounding}",
            integrator_span,
            "write it in summed form on (x, d = x - prev), `d += e; x += d` with a `start` "
            "block for the first layer, as the standard `leapfrog` does; or use float64",
        )
    for warning in cls.warnings if backward == "invert" else ():
        diags.warning(
            "W300",
            f"stage '{decl.name}': {warning}",
            backward_clause.span if backward_clause else decl.span,
            "invert re-anchors the reconstruction every few layers to bound the error",
        )

    slots = WeightSchedule(weights, weights_k).slots(depth, integrator.offsets)  # type: ignore[arg-type]
    forward_eqs, inverse_eqs = integrator.equations(int_params)
    return StageSpec(
        name=decl.name,
        integrator=integrator.name,
        integrator_params=int_params,
        depth=depth,
        step=step,
        step_fixed="step" in clauses,
        weights=weights,  # type: ignore[arg-type]
        weights_k=weights_k,
        backward=backward,  # type: ignore[arg-type]
        checkpoint_every=every,
        residuals=residuals,
        inverse=cls.kind,
        inverse_reason=cls.reason,
        inverse_fault=None if inverse_fault is None else str(inverse_fault),
        shape=shape,
        state_shape=state_shape,
        slots=slots,
        parameters=slots * sum(r.parameters for r in residuals.values()),
        origin=origin(decl.span),
        forward_equations=tuple(forward_eqs),
        inverse_equations=tuple(inverse_eqs),
    )


def _int(
    expr: ast.Expr,
    env: Mapping[str, Value],
    diags: Diagnostics,
    what: str,
    *,
    low: int,
    high: int,
    hint: str | None = None,
) -> int | None:
    try:
        value = coerce(evaluate(expr, env), "int", expr.span)
    except EvalError as err:
        diags.add(err.diagnostic)
        return None
    assert isinstance(value, int)
    if value < low:
        diags.error(
            "E205",
            f"{what} must be at least {low}, got {value}",
            expr.span,
            f"{what} is a whole number from {low} to {high:,}",
        )
        return None
    if value > high:
        diags.error(
            "E250",
            f"{what} {value} exceeds the limit of {high}",
            expr.span,
            hint or f"{what} is a whole number from {low} to {high:,}",
        )
        return None
    return value


def _unique_clauses(decl: ast.StageDecl, diags: Diagnostics) -> dict[str, ast.Clause]:
    seen: dict[str, ast.Clause] = {}
    for clause in decl.clauses:
        if clause.keyword in seen:
            first = seen[clause.keyword].span
            diags.error(
                "E230",
                f"stage '{decl.name}' states '{clause.keyword}' twice",
                clause.span,
                f"keep one: the first is at line {first.line}, column {first.column}",
            )
        else:
            seen[clause.keyword] = clause
    return seen


def _integrator(
    clause: ast.Clause | None,
    decl: ast.StageDecl,
    integrators: Mapping[str, Integrator],
    env: Mapping[str, Value],
    diags: Diagnostics,
) -> tuple[Integrator | None, dict[str, float]]:
    name = clause.name if clause is not None else "euler"
    if name not in integrators:
        assert clause is not None and clause.name_span is not None
        diags.error(
            "E200",
            f"unknown integrator '{name}'",
            clause.name_span,
            did_you_mean(name, integrators)
            or f"the integrators are {', '.join(sorted(integrators))}, or one declared with "
            "`integrator NAME(x) { ... }`",
        )
        return None, {}
    integrator = integrators[name]
    declared = {p.name: p for p in integrator.params}
    values = {p.name: p.default for p in integrator.params if p.default is not None}
    ok = True
    for i, arg in enumerate(clause.args if clause is not None else ()):
        names = list(declared)
        pname = arg.name if arg.name is not None else (names[i] if i < len(names) else None)
        if pname not in declared:
            takes = (
                f"its parameters are {', '.join(names)}"
                if names
                else f"it takes none: write `integrator {name}`"
            )
            diags.error(
                "E230",
                f"integrator '{name}' has no parameter '{pname}'"
                if pname
                else f"integrator '{name}' takes {len(names)} parameter(s)",
                arg.span,
                (did_you_mean(pname, names) if pname else None) or takes,
            )
            ok = False
            continue
        try:
            value = coerce(evaluate(arg.value, env), declared[pname].type, arg.value.span)
        except EvalError as err:
            diags.add(err.diagnostic)
            ok = False
            continue
        values[pname] = float(value)
    for pname in declared:
        if pname not in values:
            diags.error(
                "E203",
                f"integrator '{name}' needs a value for '{pname}'",
                clause.span if clause is not None else decl.span,
                f"write `integrator {name}({pname}=...)`",
            )
            ok = False
    return (integrator if ok else None), values


def _step(clause: ast.Clause, env: Mapping[str, Value], diags: Diagnostics) -> float | None:
    assert clause.value is not None
    try:
        value = coerce(evaluate(clause.value, env), "float", clause.value.span)
    except EvalError as err:
        diags.add(err.diagnostic)
        return None
    assert isinstance(value, float)
    if not 0 < value <= 1e3:
        diags.error(
            "E205",
            f"step must be positive and at most 1000, got {value}",
            clause.value.span,
            "write a step in (0, 1000], or leave `step` out for the default 1/depth",
        )
        return None
    return value


def _option_arg(
    clause: ast.Clause, env: Mapping[str, Value], diags: Diagnostics, wants: bool, example: str
) -> tuple[bool, int | None]:
    if not wants:
        if clause.args:
            diags.error(
                "E230",
                f"'{clause.name}' takes no argument",
                clause.args[0].span,
                f"write `{clause.keyword} {clause.name}`",
            )
            return False, None
        return True, None
    if len(clause.args) != 1 or clause.args[0].name is not None:
        diags.error("E230", f"'{clause.name}' takes one number", clause.span, f"e.g. {example}")
        return False, None
    value = _int(clause.args[0].value, env, diags, f"{clause.name}(k)", low=1, high=1 << 31)
    return value is not None, value


def _weights(
    clause: ast.Clause | None, env: Mapping[str, Value], depth: int | None, diags: Diagnostics
) -> tuple[str | None, int | None]:
    if clause is None:
        return "untied", None
    assert clause.name is not None and clause.name_span is not None
    if clause.name not in WEIGHTS:
        diags.error(
            "E230",
            f"unknown weights rule '{clause.name}'",
            clause.name_span,
            did_you_mean(clause.name, WEIGHTS),
        )
        return None, None
    wants = clause.name in ("shared", "interpolated")
    ok, k = _option_arg(clause, env, diags, wants, f"{clause.name}(4)")
    if not ok:
        return None, None
    where = clause.args[0].value.span if clause.args else clause.span
    if clause.name == "interpolated" and k is not None and k < 2:
        diags.error(
            "E205",
            "interpolated(k) needs k ≥ 2 control points",
            where,
            "interpolated(1) is `tied`",
        )
        return None, None
    if clause.name == "shared" and k is not None and depth is not None and k > depth:
        diags.error(
            "E205",
            f"shared({k}) has more groups than the stage's {depth} "
            f"layer{'s' if depth != 1 else ''}",
            where,
            "use `untied`, or fewer groups",
        )
        return None, None
    return clause.name, k


def _backward(
    clause: ast.Clause | None, env: Mapping[str, Value], depth: int | None, diags: Diagnostics
) -> tuple[str | None, int | None]:
    if clause is None:
        return "store", None
    assert clause.name is not None and clause.name_span is not None
    if clause.name not in BACKWARDS:
        diags.error(
            "E230",
            f"unknown backward mode '{clause.name}'",
            clause.name_span,
            did_you_mean(clause.name, BACKWARDS),
        )
        return None, None
    if clause.name == "checkpoint":
        if not clause.args:
            return "checkpoint", 1
        ok, k = _option_arg(clause, env, diags, True, "checkpoint(4)")
        return ("checkpoint", k) if ok else (None, None)
    ok, _ = _option_arg(clause, env, diags, False, "")
    return (clause.name, None) if ok else (None, None)


def _state_shape(
    integrator: Integrator, shape: tuple[int, ...] | None, decl: ast.StageDecl, diags: Diagnostics
) -> tuple[int, ...] | None:
    if shape is None:
        return None
    if not integrator.split_channels:
        return shape
    parts = len(integrator.state)
    if shape[0] % parts:
        diags.error(
            "E220",
            f"stage '{decl.name}': integrator '{integrator.name}' splits the "
            f"{shape[0]} channels into {parts} equal parts",
            decl.span,
            f"make the channel count a multiple of {parts} (pad_channels in a transition)",
        )
        return None
    return (shape[0] // parts, *shape[1:])


def _residuals(
    decl: ast.StageDecl,
    integrator: Integrator,
    env: Mapping[str, Value],
    state_shape: tuple[int, ...] | None,
    blocks: Mapping[str, ast.BlockDecl],
    limits: Limits,
    diags: Diagnostics,
    budget: ExpansionBudget | None = None,
) -> dict[str, SequenceSpec] | None:
    needed = integrator.residuals
    clauses = decl.residuals
    if not clauses:
        diags.error(
            "E210",
            f"stage '{decl.name}' has no residual function",
            decl.span,
            "add e.g. `residual { conv2d(16, kernel=3, padding=1) relu }`",
        )
        return None
    bodies: dict[str, tuple[ast.LayerSeq | ast.LayerCall, Span]] = {}
    if len(clauses) == 1 and clauses[0].binds is None:
        # one unnamed residual serves every residual function, each with its own weights
        bodies = {name: (clauses[0].body, clauses[0].span) for name in needed}
    else:
        for clause in clauses:
            name = clause.binds or "f"
            if name not in needed:
                diags.error(
                    "E200",
                    f"integrator '{integrator.name}' has no residual function '{name}'",
                    clause.span,
                    did_you_mean(name, needed) or f"its residual functions are {', '.join(needed)}",
                )
            elif name in bodies:
                first = bodies[name][1]
                diags.error(
                    "E120",
                    f"residual '{name}' given twice",
                    clause.span,
                    f"keep one: the first is at line {first.line}, column {first.column}"
                    + (
                        " (a `residual` without a name binds 'f')"
                        if name == "f" and any(c.binds is None for c in clauses)
                        else ""
                    ),
                )
            else:
                bodies[name] = (clause.body, clause.span)
        for name in needed:
            if name not in bodies:
                diags.error(
                    "E203",
                    f"stage '{decl.name}': integrator '{integrator.name}' needs "
                    f"residual function '{name}'",
                    decl.span,
                    f"add `residual {name} = ...`",
                )
    if set(bodies) != set(needed):
        return None
    out: dict[str, SequenceSpec] = {}
    for name in needed:
        body, span = bodies[name]
        seq = expand_sequence(body, env, state_shape, blocks, limits, diags, budget)
        if seq is None:
            continue
        if seq.out_shape != seq.in_shape:
            diags.error(
                "E220",
                f"residual '{name}' maps {list(seq.in_shape)} to "
                f"{list(seq.out_shape)}; an ODE stage needs it to keep the state's shape",
                span,
                _restore_hint(seq.in_shape, seq.out_shape),
            )
            continue
        out[name] = seq
    return out if len(out) == len(needed) else None


def _restore_hint(want: tuple[int, ...], got: tuple[int, ...]) -> str:
    """Which dimension of a residual's output to change, and how, to give back ``want``."""
    if len(want) != len(got):
        return f"keep the state's {len(want)} dimension(s): no `flatten` inside a residual"
    if len(want) == 1:
        return f"end the residual with linear({want[0]}) to give back {want[0]} features"
    fixes = []
    if want[0] != got[0]:
        fixes.append(f"end with {want[0]} channels, e.g. conv2d({want[0]}, kernel=3, padding=1)")
    if want[1:] != got[1:]:
        size = "x".join(map(str, want[1:]))
        fixes.append(
            f"keep the size {size}: stride 1, no pooling, padding = kernel // 2 (odd kernels)"
        )
    return "; ".join(fixes)
