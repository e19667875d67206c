"""An integrator as the step class of a generated module: init/output, the forward step, its
derived inverse and the increments of its exact updates, each a static method, and
``program()`` assembling them into the ``IntegratorProgram`` an ``OdeStage`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from odedsl.export.graphcode import RESERVED, Function, render_graph
from odedsl.export.safety import (
    BUG,
    RESIDUAL_FUNCTION,
    Code,
    Locals,
    ident,
    literal,
    paragraph,
    quoted,
    refuse,
)
from odedsl.integrators import Integrator
from odedsl.integrators.dry_run import reads_t
from odedsl.integrators.emit import InitState, Output
from odedsl.runtime.program import EXACT_KINDS, AffineUpdate, IntegratorProgram, Step, SwapUpdate


@dataclass
class StepClass:
    """What the template needs to write one integrator's step class."""

    name: Code
    integrator: Code
    integrator_name: Code
    params: list[tuple[Code, Code]]
    kind: Code
    doc: list[Code]
    state_names: Code
    state_label: Code
    residuals: Code
    offsets: Code
    residual_offsets: Code
    init_lines: list[Code]
    output_line: Code
    functions: list[Function]
    step: Code
    first: Code | None
    probe: Code  # the program's coefficient check: CoefficientProbe(...) of its steps
    stages: list[Code] = field(default_factory=list)

    @property
    def uses_math(self) -> bool:
        return any(f.uses_math for f in self.functions)


def step_class(
    name: Code, integrator: Integrator, params: dict[str, float], reason: str | None
) -> StepClass:
    """Render ``integrator`` (with ``params`` bound) as the members of a step class."""
    program: IntegratorProgram = integrator.program(params)
    graphs = integrator.graphs(params)
    forward_eqs, inverse_eqs = integrator.equations(params)

    def split(eqs: list[str], start: bool) -> list[str]:
        return [e.removeprefix("start: ") for e in eqs if e.startswith("start: ") == start]

    bound = ", ".join(
        f"{ident(k, 'integrator parameter')} = {literal(v)}" for k, v in sorted(params.items())
    )
    functions: list[Function] = []
    steps: list[Code] = []
    time = False  # whether some step or inverse reads t
    for prefix, graph, step, start in (
        ("", graphs.step, program.step, False),
        ("first_", graphs.first, program.first, True),
    ):
        if graph is None or step is None:
            continue
        time = time or any(reads_t(g) for g in (graph.forward, graph.inverse) if g is not None)
        which = "the first layer" if start else "one layer"
        fwd = render_graph(graph.forward, f"{prefix}forward", split(forward_eqs, start))
        fwd.doc = Code(f"The step of {which}: the state at t → the state at t + h.")
        functions.append(fwd)
        inv = None
        if graph.inverse is not None:
            inv = render_graph(graph.inverse, f"{prefix}inverse", split(inverse_eqs, start))
            inv.doc = Code(
                f"Undoes {prefix}forward exactly (derived from its updates): t + h → t."
                if step.kind in EXACT_KINDS
                else f"Approximately undoes {prefix}forward: the scheme run backwards in time."
            )
            functions.append(inv)
        affine = [u for u in step.updates or () if isinstance(u, AffineUpdate)]
        for k, (g, u) in enumerate(zip(graph.increments, affine, strict=True)):
            inc = render_graph(g, f"{prefix}increment_{k}")
            i, a = literal(u.target), literal(float(u.factor))
            inc.doc = Code(f"e of update {k}: state[{i}] ← {a}·state[{i}] + e (for invert mode).")
            functions.append(inc)
        incs = [f for f in functions if f.name.startswith(f"{prefix}increment_")]
        steps.append(_step_expr(step, fwd, inv, incs))
    return StepClass(
        name=name,
        integrator=quoted(integrator.name, "integrator name"),
        integrator_name=ident(integrator.name, "integrator name"),
        params=[(ident(k, "integrator parameter"), literal(v)) for k, v in sorted(params.items())],
        kind=_kind(program.kind),
        doc=paragraph(
            (f"Parameters, bound into the code below: {bound}. " if bound else "")
            + f"Inverse {program.kind}: {reason or 'none'}."
        ),
        state_label=Code(", ".join(ident(n, "state variable") for n in program.state_names)),
        state_names=literal_names(program.state_names, "state variable"),
        residuals=literal_names(program.residuals, "residual name", RESIDUAL_FUNCTION),
        offsets=literal(tuple(float(c) for c in program.offsets)),
        residual_offsets=_residual_offsets(program),
        init_lines=_init_lines(program.init_state, integrator.declared),
        output_line=_output_line(program.output),
        functions=functions,
        step=steps[0],
        first=steps[1] if len(steps) > 1 else None,
        probe=Code(
            f"CoefficientProbe({literal(len(program.state_names))}, step"
            + (", first" if len(steps) > 1 else "")
            + f", reads_t={literal(time)})"
        ),
    )


def _residual_offsets(program: IntegratorProgram) -> Code:
    """``{"f": (0.0, 1.0), ...}``: each residual's forward offsets (or ``None``)."""
    if program.residual_offsets is None:
        return literal(None)
    items = [
        f"{quoted(name, 'residual name', rename=RESIDUAL_FUNCTION)}: {literal(tuple(cs))}"
        for name, cs in program.residual_offsets.items()
    ]
    return Code("{" + ", ".join(items) + "}")


def literal_names(names: Sequence[str], what: str, rename: str | None = None) -> Code:
    items = [quoted(n, what, rename=rename) for n in names]
    return Code(f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})")


def _kind(kind: str) -> Code:
    if kind not in ("exact", "exact-unstable", "approximate", "none"):
        raise refuse(
            "E260",
            f"unknown inverse kind {kind!r}",
            hint=f"{BUG}: an integrator's inverse is exact, exact-unstable, approximate or none",
        )
    return Code(f'"{kind}"')


def _step_expr(step: Step, fwd: Function, inv: Function | None, incs: list[Function]) -> Code:
    """``Step(forward, inverse, kind[, updates])``, laid out for the template's ``step = ``
    line (8 spaces deep) as ruff format would lay it out."""
    args = [f"cls.{fwd.name}", f"cls.{inv.name}" if inv else "None", _kind(step.kind)]
    if step.updates is None:
        return Code(f"Step({', '.join(args)})")
    pending = iter(incs)
    ups = []
    for u in step.updates:
        if isinstance(u, SwapUpdate):
            ups.append(f"SwapUpdate({literal(u.a)}, {literal(u.b)})")
        elif isinstance(u, AffineUpdate):
            target, factor = literal(u.target), literal(float(u.factor))
            ups.append(f"AffineUpdate({target}, {factor}, cls.{next(pending).name})")
        else:
            raise refuse(
                "E260",
                f"cannot export the update {u!r}",
                hint=f"{BUG}: a step's exact updates are AffineUpdate or SwapUpdate",
            )
    pad = " " * 12
    lines = ["Step(", *(f"{pad}{a}," for a in args), f"{pad}("]
    lines += [f"{pad}    {u}," for u in ups]
    lines += [f"{pad}),", " " * 8 + ")"]
    return Code("\n".join(lines))


def _init_lines(init: object, declared: Sequence[str]) -> list[Code]:
    """``init_state(x)``: the state a stage starts from (mirrors ``emit.InitState``)."""
    if not isinstance(init, InitState):
        raise refuse(
            "E260",
            f"cannot export the state initialisation {init!r}",
            hint=f"{BUG}: an integrator program starts from an emit.InitState",
        )
    if init.two_step:
        return [Code("return (torch.zeros_like(x), x)")]
    if init.split:
        parts = literal(init.parts)
        return [
            Code(f"if x.dim() < 2 or x.shape[1] % {parts}:"),
            Code(
                f'    raise ValueError(f"cannot split {{tuple(x.shape)}} into {parts} '
                'equal channel chunks")'
            ),
            Code(f"return tuple(torch.chunk(x, {parts}, dim=1))"),
        ]
    names = Locals((*RESERVED, "x"))
    out: list[Code] = [Code("x")]
    lines: list[Code] = []
    for (kind, value), var in zip(init.aux, declared[1:], strict=True):
        local = names.new(var)
        if kind == "copy":
            lines.append(Code(f"{local} = {out[int(value)]}"))
        elif value == 0:
            lines.append(Code(f"{local} = torch.zeros_like(x)"))
        else:
            lines.append(Code(f"{local} = torch.full_like(x, {literal(float(value))})"))
        out.append(local)
    ret = f"return ({out[0]},)" if len(out) == 1 else f"return ({', '.join(out)})"
    return [*lines, Code(ret)]


def _output_line(output: object) -> Code:
    if not isinstance(output, Output):
        raise refuse(
            "E260",
            f"cannot export the stage output {output!r}",
            hint=f"{BUG}: an integrator program ends with an emit.Output",
        )
    if output.split:
        return Code("return torch.cat(state, dim=1)")
    return Code(f"return state[{literal(output.index)}]")
