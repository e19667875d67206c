"""Syntax trees → validated spec: names, parameters and overrides, network structure, shapes.

Entry point: :func:`validate`. Every problem is reported into one :class:`Diagnostics`
collector, and one :class:`DslError` carries them all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from odedsl.diagnostics import Diagnostic, Diagnostics, Span, did_you_mean, override
from odedsl.integrators import Integrator, analyse, standard_library
from odedsl.limits import Limits
from odedsl.spec.evaluate import TYPES, EvalError, Value, coerce, evaluate
from odedsl.spec.model import NetworkSpec, Part, SectionSpec
from odedsl.spec.sequences import ExpansionBudget, expand_sequence, origin
from odedsl.spec.stages import validate_stage
from odedsl.syntax import ast
from odedsl.syntax.imports import LoadedModule

INPUT_KINDS = {"image": 3, "vector": 1}
#: How to write a value of each parameter type, for hints: (what, an example).
_EXAMPLES: dict[str, tuple[str, Value]] = {
    "int": ("a whole number", 8),
    "float": ("a number", 0.5),
    "bool": ("true or false", True),
    "str": ("a text", "name"),
}


@dataclass(frozen=True)
class ValidatedSpec:
    """What the compiler consumes: the network model plus the integrators it names."""

    network: NetworkSpec
    integrators: Mapping[str, Integrator]
    warnings: tuple[Diagnostic, ...] = field(default=())


def validate(
    modules: list[LoadedModule],
    *,
    network: str | None = None,
    overrides: Mapping[str, Value] | None = None,
    limits: Limits,
) -> ValidatedSpec:
    diags = Diagnostics()
    blocks, integrators, networks, broken = _definitions(modules, diags)
    chosen = _choose_network(modules, networks, network, diags)
    if chosen is None:
        diags.raise_if_errors()
        raise AssertionError("unreachable: no network and no error")  # pragma: no cover
    env = _parameters(chosen, overrides or {}, diags)
    spec = None
    if env is not None:
        spec = _network(chosen, env, blocks, integrators, limits, diags, broken)
    diags.raise_if_errors()
    assert spec is not None
    return ValidatedSpec(spec, integrators, tuple(diags.warnings))


def _definitions(
    modules: list[LoadedModule], diags: Diagnostics
) -> tuple[dict[str, ast.BlockDecl], dict[str, Integrator], dict[str, ast.NetworkDecl], set[str]]:
    """Blocks, integrators (standard and user) and networks by name, and the names of user
    integrators whose declaration had errors (already reported)."""
    blocks: dict[str, ast.BlockDecl] = {}
    broken: set[str] = set()
    integrators: dict[str, Integrator] = dict(standard_library())
    user_integrators: dict[str, ast.IntegratorDecl] = {}
    networks: dict[str, ast.NetworkDecl] = {}

    def claim(kind: str, name: str, span: Span, table: Mapping[str, ast.Node]) -> bool:
        if name in table:
            first = table[name].span
            diags.error(
                "E120",
                f"{kind} '{name}' is defined twice",
                span,
                f"first defined at {first.file}:{first.line}:{first.column}",
            )
            return False
        return True

    for loaded in modules:
        mod = loaded.module
        for b in mod.blocks:
            if claim("block", b.name, b.span, blocks):
                blocks[b.name] = b
        for n in mod.networks:
            if claim("network", n.name, n.span, networks):
                networks[n.name] = n
        for i in mod.integrators:
            if i.name in integrators and i.name not in user_integrators:
                diags.error(
                    "E120",
                    f"integrator '{i.name}' is already in the standard library",
                    i.span,
                    "give your integrator another name",
                )
                continue
            if claim("integrator", i.name, i.span, user_integrators):
                user_integrators[i.name] = i
                analysed = analyse(i, diags)
                if analysed is not None:
                    integrators[i.name] = analysed
                else:
                    broken.add(i.name)
    return blocks, integrators, networks, broken


def _choose_network(
    modules: list[LoadedModule],
    networks: Mapping[str, ast.NetworkDecl],
    wanted: str | None,
    diags: Diagnostics,
) -> ast.NetworkDecl | None:
    main = modules[0].module
    if wanted is not None:
        if wanted not in networks:
            diags.error(
                "E200",
                f"no network named '{wanted}'",
                main.networks[0].span if main.networks else main.span,  # the file's networks
                did_you_mean(wanted, networks)
                or (
                    f"the networks are {', '.join(sorted(networks))}"
                    if networks
                    else "the spec defines no network: add `network NAME(...) { ... }`"
                ),
            )
            return None
        return networks[wanted]
    if main.networks:
        return main.networks[0]
    diags.error(
        "E210",
        "the spec defines no network",
        main.span,
        "add `network NAME(...) { input ...; stage ...; }`",
    )
    return None


def _parameters(
    net: ast.NetworkDecl, overrides: Mapping[str, Value], diags: Diagnostics
) -> dict[str, Value] | None:
    declared = {p.name: p for p in net.params}
    ok = True
    for name in overrides:
        if name not in declared:
            diags.error(
                "E130",
                f"network '{net.name}' has no parameter '{name}'",
                net.span,
                did_you_mean(name, declared) or "the network declares no parameters",
            )
            ok = False
    env: dict[str, Value] = {}
    for p in net.params:
        if p.name in env:
            first = next(q for q in net.params if q.name == p.name).span
            diags.error(
                "E120",
                f"parameter '{p.name}' declared twice",
                p.span,
                f"rename or remove one: the first is at line {first.line}, column {first.column}",
            )
            ok = False
            continue
        if p.type is not None and p.type not in TYPES:
            diags.error("E204", f"unknown type '{p.type}'", p.span, did_you_mean(p.type, TYPES))
            ok = False
            continue
        try:
            if p.name in overrides:
                value = overrides[p.name]
                if p.type is not None:
                    try:
                        value = coerce(value, p.type, p.span)
                    except EvalError:
                        what, example = _EXAMPLES[p.type]
                        diags.error(
                            "E130",
                            f"{override(p.name, value, as_given=True)}: parameter "
                            f"'{p.name}' is {p.type}",
                            p.span,
                            f"pass {what}, e.g. {override(p.name, example)}",
                        )
                        ok = False
                        continue
            elif p.default is not None:
                value = evaluate(p.default, env)
                if p.type is not None:
                    value = coerce(value, p.type, p.default.span)
            else:
                diags.error(
                    "E203",
                    f"parameter '{p.name}' has no default and was not set",
                    p.span,
                    f"give it a default, or pass {override(p.name)}",
                )
                ok = False
                continue
        except EvalError as err:
            diags.add(err.diagnostic)
            ok = False
            continue
        env[p.name] = value  # type: ignore[assignment]
    return env if ok else None


def _network(
    net: ast.NetworkDecl,
    env: dict[str, Value],
    blocks: Mapping[str, ast.BlockDecl],
    integrators: Mapping[str, Integrator],
    limits: Limits,
    diags: Diagnostics,
    broken: Collection[str] = (),
) -> NetworkSpec | None:
    inputs = [i for i in net.items if isinstance(i, ast.InputDecl)]
    if not inputs:
        diags.error(
            "E210",
            f"network '{net.name}' has no input",
            net.span,
            "add e.g. `input image[3, 32, 32]`",
        )
        return None
    for extra in inputs[1:]:
        first = inputs[0].span
        diags.error(
            "E210",
            "a network has one input",
            extra.span,
            f"remove this one: the input is declared at line {first.line}, column {first.column}",
        )
    input_kind, shape = _input(inputs[0], env, limits, diags)
    input_shape = shape
    _structure(net, diags)

    parts: list[Part] = []
    budget = ExpansionBudget(limits.max_total_layers)
    counts: dict[str, int] = {}
    stage_names: set[str] = set()
    for item in net.items:
        if isinstance(item, ast.InputDecl):
            continue
        if isinstance(item, ast.StageDecl):
            if item.name in stage_names or item.name in ("stem", "head"):
                diags.error(
                    "E120",
                    f"stage name '{item.name}' used twice",
                    item.span,
                    f"'{item.name}' names the network's {item.name}: choose another stage name"
                    if item.name in ("stem", "head")
                    else "give each stage its own name, e.g. body1, body2",
                )
            stage_names.add(item.name)
            if _integrator_name(item) in broken:
                shape = None  # its declaration's errors are reported; "unknown" would be noise
                continue
            stage = validate_stage(item, env, shape, integrators, blocks, limits, diags, budget)
            shape = stage.shape if stage is not None else None
            if stage is not None:
                parts.append(stage)
            continue
        counts[item.kind] = counts.get(item.kind, 0) + 1
        name = item.kind if item.kind != "transition" else f"transition{counts[item.kind]}"
        seq = expand_sequence(item.body, env, shape, blocks, limits, diags, budget)
        shape = seq.out_shape if seq is not None else None
        if seq is not None:
            parts.append(SectionSpec(part=item.kind, name=name, body=seq, origin=origin(item.span)))
    if shape is None or input_kind is None or input_shape is None or diags.has_errors:
        return None
    total = sum(p.body.parameters if isinstance(p, SectionSpec) else p.parameters for p in parts)
    if total > limits.max_parameters:
        diags.error(
            "E250",
            f"network has {total:,} parameters, over the budget of {limits.max_parameters:,}",
            net.span,
            "reduce widths or depth, use tied/shared weights, or raise ODEDSL_MAX_PARAMETERS",
        )
        return None
    return NetworkSpec(
        name=net.name,
        params=env,
        input_kind=input_kind,
        input_shape=input_shape,
        output_shape=shape,
        parts=tuple(parts),
        parameters=total,
        origin=origin(net.span),
    )


def _integrator_name(stage: ast.StageDecl) -> str | None:
    return next((c.name for c in stage.clauses if c.keyword == "integrator"), None)


def _input(
    decl: ast.InputDecl, env: Mapping[str, Value], limits: Limits, diags: Diagnostics
) -> tuple[str | None, tuple[int, ...] | None]:
    if decl.kind not in INPUT_KINDS:
        diags.error(
            "E200",
            f"unknown input kind '{decl.kind}'",
            decl.span,
            did_you_mean(decl.kind, INPUT_KINDS),
        )
        return None, None
    rank = INPUT_KINDS[decl.kind]
    if len(decl.dims) != rank:
        example = "image[3, 32, 32]" if rank == 3 else "vector[64]"
        diags.error(
            "E220",
            f"an {decl.kind} input has {rank} dimension(s), got {len(decl.dims)}",
            decl.span,
            f"e.g. `input {example}`",
        )
        return None, None
    dims: list[int] = []
    for i, d in enumerate(decl.dims):
        try:
            value = coerce(evaluate(d, env), "int", d.span)
        except EvalError as err:
            diags.add(err.diagnostic)
            return None, None
        bound = limits.max_width if i == 0 else limits.max_spatial
        if not 1 <= value <= bound:  # type: ignore[operator]
            env_name = "ODEDSL_MAX_WIDTH" if i == 0 else "ODEDSL_MAX_SPATIAL"
            diags.error(
                "E250" if value > bound else "E205",  # type: ignore[operator]
                f"input dimension {value} outside 1..{bound}",
                d.span,
                f"raise {env_name} if this is intended"
                if value > bound  # type: ignore[operator]
                else "each input dimension is a size of at least 1, e.g. image[3, 32, 32]",
            )
            return None, None
        dims.append(value)  # type: ignore[arg-type]
    return decl.kind, tuple(dims)


def _structure(net: ast.NetworkDecl, diags: Diagnostics) -> None:
    """stem first (at most one), head last (at most one), at least one stage."""
    items = [i for i in net.items if not isinstance(i, ast.InputDecl)]
    stages = [i for i in items if isinstance(i, ast.StageDecl)]
    if not stages:
        diags.error(
            "E210",
            f"network '{net.name}' has no ODE stage",
            net.span,
            "add `stage body = ode(depth) { integrator euler; residual ... }`",
        )
    sections = [i for i in items if isinstance(i, ast.Section)]
    for kind, pos in (("stem", 0), ("head", -1)):
        found = [s for s in sections if s.kind == kind]
        for extra in found[1:]:
            diags.error(
                "E210",
                f"a network has at most one {kind}",
                extra.span,
                f"merge the layers of both into one `{kind} {{ ... }}`",
            )
        if found and items[pos] is not found[0]:
            where = "first" if kind == "stem" else "last"
            move = "before" if kind == "stem" else "after"
            diags.error(
                "E210",
                f"the {kind} must come {where}",
                found[0].span,
                f"move the {kind} {move} every stage and transition",
            )
