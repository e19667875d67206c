"""Validated spec → what the templates print: every value already :class:`Code`.

One function per kind of network part, as the compiler's ``emit_<part>``; names are claimed in a
:class:`Namespace` so two parts can never bind the same module-level name, and the generated
network has the compiled one's module tree (hence the same ``state_dict`` keys).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from odedsl import runtime
from odedsl.compiler.graph import class_name
from odedsl.export.layers import layer_call
from odedsl.export.safety import (
    BUG,
    E_NAME,
    RESIDUAL_FUNCTION,
    Code,
    Namespace,
    comment,
    file_label,
    ident,
    literal,
    paragraph,
    quoted,
    refuse,
    where,
)
from odedsl.export.steps import StepClass, step_class
from odedsl.export.vendor import Imports, Vendored
from odedsl.runtime import OdeStage
from odedsl.runtime import layers as runtime_layers
from odedsl.spec.fingerprint import network_fingerprint, weights_fingerprint
from odedsl.spec.model import NetworkSpec, SequenceSpec, StageSpec
from odedsl.spec.validate import ValidatedSpec

#: Packages torch imports (or may) and common scientific ones: refused even where not installed,
#: so a build does not depend on the environment it ran in.
PACKAGES = frozenset(
    {
        "torch", "odedsl", "torchvision", "numpy", "typing_extensions", "sympy", "mpmath",
        "networkx", "jinja2", "markupsafe", "fsspec", "filelock", "setuptools", "pkg_resources",
        "_distutils_hack", "triton", "nvidia", "packaging", "PIL", "matplotlib", "scipy", "yaml",
        "lark", "pydantic", "pydantic_core", "annotated_types", "rich", "pygments", "sklearn",
        "pandas", "functorch", "torchgen", "optree", "opt_einsum", "dill", "cloudpickle",
        "psutil", "tqdm", "requests", "urllib3", "certifi", "idna", "six", "dateutil", "pytz",
        "tzdata", "attr", "attrs", "pyparsing", "kiwisolver", "cycler", "fontTools",
        "contourpy", "joblib", "threadpoolctl", "markdown_it", "mdurl", "IPython", "pytest",
        "pluggy", "hypothesis", "intel_openmp", "mkl", "tbb", "onnx", "onnxruntime",
    }
)  # fmt: skip
#: Module names a generated file must not take (it would shadow them for its importers); any
#: other module installed where the build runs is refused too (:func:`shadows`).
SHADOWED = frozenset(sys.stdlib_module_names) | PACKAGES
#: Names the model template itself defines or uses at module level.
FIXED = ("PARAMS", "build", "zero_init", "math", "torch", "nn", "Tensor", "State", "ResidualCall")
#: Attributes of the generated network class besides its parts.
CLASS_ATTRIBUTES = ("input_shape", "output_shape", "network_name", "weights_fingerprint")
_WIDTH = 100


@dataclass
class Entry:
    """One ``"name": constructor,`` line of a ``Sequence``, with its spec location."""

    key: Code
    call: Code
    where: Code
    inline: bool  # the location fits as a trailing comment


@dataclass
class Seq:
    entries: list[Entry]
    shapes: Code


@dataclass
class Part:
    """One attribute of the network: a section (``Sequence``) or a stage (its class)."""

    attr: Code
    where: Code
    summary: Code
    seq: Seq | None = None
    stage_class: Code | None = None


@dataclass
class StageClass:
    name: Code
    stage: Code  # quoted stage name
    stage_name: Code
    where: Code
    step_class: Code
    doc: list[Code]
    residuals: list[tuple[Code, Code, Code, Seq]]  # quoted name, name, summary, sequence
    depth: Code
    step: Code | None  # None: h = 1/N, also after set_depth
    schedule: Code
    backward: Code
    stochastic: Code


@dataclass
class ModelContext:
    """Everything ``model.py.j2`` prints."""

    module: Code
    title: list[Code]
    spec_file: Code
    network: Code
    network_quoted: Code
    cls: Code
    where: Code
    summary: Code
    input_shape: Code
    output_shape: Code
    constants: list[tuple[Code, Code, Code]]  # constant, value, parameter name
    omitted: list[Code]
    step_classes: list[StepClass]
    stage_classes: list[StageClass]
    parts: list[Part]
    standalone: bool
    loss: Code  # the training script's: "cross_entropy" for class scores, else "mse"
    fingerprint: Code  # the network's digest (odedsl.spec.fingerprint), which resumes check
    weights_fingerprint: Code  # what its weights mean, which odedsl.load_checkpoint checks
    imports: Code = field(default_factory=Code)
    runtime: Code = field(default_factory=Code)
    runtime_note: list[Code] = field(default_factory=list)
    uses_zero_init: bool = False
    used: set[str] = field(default_factory=set)  # runtime names (and zero_init) the code uses


def shape(s: tuple[int, ...]) -> Code:
    return Code("[" + ", ".join(literal(int(d)) for d in s) + "]")


def module_name(net: NetworkSpec) -> Code:
    """The generated file's module name: the network's, unless that would shadow a module."""
    name = ident(net.name, "network name", net.origin)
    if name.startswith("__") or shadows(name) or shadows(f"train_{name}"):
        raise refuse(
            E_NAME,
            f"network name '{name}' ({where(net.origin)}) would shadow the Python module "
            f"'{name}' for code next to the generated file",
            hint=_module_hint(name),
        )
    return name


def shadows(name: str) -> bool:
    """Whether a file ``<name>.py`` would hide a module its neighbours import: the standard
    library, :data:`PACKAGES`, or any top-level module installed here (``import torch`` next to
    ``typing_extensions.py`` is a circular import)."""
    return name in SHADOWED or _installed(name)


#: The first line of every file ``odedsl build`` writes (the templates' header).
GENERATED = b"# Generated by odedsl "


def _installed(name: str) -> bool:
    """``name`` is importable here from outside the current directory (a file left there by
    an earlier build, or the user's own code, is no module torch imports), and is not a file
    an earlier ``odedsl build`` wrote (a rebuild into a folder on ``sys.path`` was refused as
    shadowing its own output)."""
    try:
        found = importlib.util.find_spec(name)
        if found is None:
            return False
        if found.has_location and found.origin and _generated(Path(found.origin)):
            return False
        places = [found.origin] if found.has_location and found.origin else []
        places += list(found.submodule_search_locations or ())
        here = Path.cwd().resolve()
        return not places or not all(Path(p).resolve().is_relative_to(here) for p in places)
    except Exception:  # a broken package or finder, a deleted cwd: no evidence of a module
        return False


def _generated(path: Path) -> bool:
    """``path`` starts with the header ``odedsl build`` writes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(GENERATED)) == GENERATED
    except OSError:
        return False


def _module_hint(name: str) -> str:
    example = f", e.g. to 'my_{name}'" if len(name) <= 61 else ""
    return (
        f"rename the network in the spec{example}: the generated files are <network>.py and "
        "train_<network>.py, which must not start with __ nor take the name of a "
        "standard-library module or of an installed package (torch, its dependencies such as "
        "typing_extensions or sympy, numpy, scipy, odedsl, ...)"
    )


def _fingerprint(net: NetworkSpec) -> Code:
    """The network's digest as a literal: hex digits and one colon, nothing from the spec."""
    found = network_fingerprint(net)
    if not re.fullmatch(r"[0-9a-f]{16}:[0-9a-f]{16}", found):
        raise AssertionError(f"{BUG}: a network fingerprint of another form: {found!r}")
    return Code(f'"{found}"')


def _weights_fingerprint(net: NetworkSpec) -> Code:
    """The weights fingerprint as a literal (``w2:`` and hex digits, nothing from the spec),
    so a checkpoint of the generated module says which network it was written for."""
    found = weights_fingerprint(net)
    if not re.fullmatch(r"w[0-9]+:[0-9a-f]{16}", found):
        raise AssertionError(f"{BUG}: a weights fingerprint of another form: {found!r}")
    return Code(f'"{found}"')


def model_context(spec: ValidatedSpec, vendored: Vendored | None) -> ModelContext:
    """The model template's data; ``vendored``: the runtime to embed (``--standalone``)."""
    net = spec.network
    taken = set(FIXED) | (
        set(vendored.defines) | set(vendored.imports.bound()) if vendored else importable()
    )
    ns = Namespace(taken)
    cls = ns.claim(class_name(net.name), "network class", source=f"the network '{net.name}'")
    steps: dict[tuple[str, tuple[tuple[str, float], ...]], StepClass] = {}
    stage_classes: list[StageClass] = []
    parts: list[Part] = []
    used: set[str] = set()
    for part in net.parts:
        attr = ident(part.name, "stage name", part.origin)
        if attr in CLASS_ATTRIBUTES or hasattr(nn.Module, attr):
            raise refuse(
                E_NAME,
                f"stage name '{attr}' ({where(part.origin)}) is reserved: an attribute of the "
                "generated network or of torch.nn.Module",
                hint=f"rename the stage in the spec, e.g. to '{attr}_stage': attributes of "
                "torch.nn.Module (forward, compile, train, to, ...) and "
                f"{', '.join(CLASS_ATTRIBUTES)} cannot name a stage",
            )
        if isinstance(part, StageSpec):
            key = (part.integrator, tuple(sorted(part.integrator_params.items())))
            if key not in steps:
                base = class_name(ident(part.integrator, "integrator name", part.origin)) + "Step"
                name = base + (str(len(steps) + 1) if base in ns else "")
                integrator = spec.integrators[part.integrator]
                steps[key] = step_class(
                    ns.claim(name, "step class", source=f"the integrator '{part.integrator}'"),
                    integrator,
                    part.integrator_params,
                    part.inverse_reason,
                )
            steps[key].stages.append(attr)
            stage_classes.append(_stage_class(part, steps[key].name, ns, used))
            summary = comment(f"{part.depth} layers of {part.integrator} on {shape(part.shape)}")
            parts.append(
                Part(attr, where(part.origin), summary, stage_class=stage_classes[-1].name)
            )
        else:
            seq = _sequence(part.body, 12, used)
            parts.append(Part(attr, where(part.origin), seq.shapes, seq=seq))
    constants, omitted = _constants(net, ns)
    ctx = ModelContext(
        module=module_name(net),
        title=paragraph(
            f"Network ``{net.name}``, generated by ``odedsl build`` from {where(net.origin)}."
        ),
        spec_file=file_label(net.origin.rsplit(":", 2)[0]),
        network=ident(net.name, "network name"),
        network_quoted=quoted(net.name, "network name"),
        cls=cls,
        where=where(net.origin),
        summary=comment(
            f"input {net.input_kind} {shape(net.input_shape)} → {shape(net.output_shape)}, "
            f"{net.parameters:,} parameters"
        ),
        input_shape=literal(tuple(net.input_shape)),
        output_shape=literal(tuple(net.output_shape)),
        constants=constants,
        omitted=omitted,
        step_classes=list(steps.values()),
        stage_classes=stage_classes,
        parts=parts,
        standalone=vendored is not None,
        loss=Code('"cross_entropy"' if len(net.output_shape) == 1 else '"mse"'),
        fingerprint=_fingerprint(net),
        weights_fingerprint=_weights_fingerprint(net),
        used=used,
    )
    ctx.uses_zero_init = "zero_init" in used
    ctx.imports = _imports(ctx, vendored)
    if vendored is not None:
        ctx.runtime = vendored.source
        ctx.runtime_note = paragraph(
            f"Standalone: the odedsl runtime this file needs (modules "
            f"{', '.join(vendored.modules)}) is copied below, so the file imports nothing but "
            "torch and the standard library.",
            96,
        )
    return ctx


def _constants(net: NetworkSpec, ns: Namespace) -> tuple[list[tuple[Code, Code, Code]], list[Code]]:
    """Network parameters as ``DEPTH = 16``; string parameters are never written (9.3)."""
    out, omitted = [], []
    for name, value in net.params.items():
        pname = ident(name, "network parameter", net.origin)
        if isinstance(value, str):
            omitted.append(pname)
            continue
        source = f"the network parameter '{name}'"
        out.append(
            (ns.claim(name.upper(), "parameter constant", source=source), literal(value), pname)
        )
    return out, omitted


def _sequence(seq: SequenceSpec, indent: int, used: set[str]) -> Seq:
    entries = []
    for layer in seq.layers:
        call = layer_call(layer)
        if call.runtime:
            used.add(call.runtime)
        if call.zero:
            used.add("zero_init")
        key = quoted(layer.name, "layer name", layer.origin)
        code = call.render()
        loc = where(layer.origin)
        inline = indent + len(key) + len(code) + len(loc) + 7 <= _WIDTH
        entries.append(Entry(key, code, loc, inline))
    used.add("Sequence")
    return Seq(entries, Code(f"{shape(seq.in_shape)} → {shape(seq.out_shape)}"))


def _stage_class(stage: StageSpec, step_cls: Code, ns: Namespace, used: set[str]) -> StageClass:
    base = class_name(ident(stage.name, "stage name", stage.origin))
    source = f"the stage '{stage.name}'"
    name = ns.claim(
        base if base.startswith("Stage") else base + "Stage", "stage class", source=source
    )
    residuals = []
    for r, seq in stage.residuals.items():
        if hasattr(OdeStage, r):
            raise refuse(
                E_NAME,
                f"residual name '{r}' ({where(stage.origin)}) is an attribute of OdeStage",
                hint=f"rename {RESIDUAL_FUNCTION} in the spec, e.g. to '{r}_fn': attributes of "
                "OdeStage (forward, kind, step_at, ...) cannot name a residual function",
            )
        body = _sequence(seq, 24, used)
        summary = comment(f"{body.shapes}, {seq.parameters:,} parameters per slot")
        name_r = ident(r, "residual name", stage.origin, rename=RESIDUAL_FUNCTION)
        residuals.append(
            (quoted(r, "residual name", rename=RESIDUAL_FUNCTION), name_r, summary, body)
        )
    if stage.weights_k is None:
        schedule = Code(f"WeightSchedule({quoted(stage.weights, 'weights')})")
    else:
        schedule = Code(
            f"WeightSchedule({quoted(stage.weights, 'weights')}, {literal(stage.weights_k)})"
        )
    if stage.backward == "checkpoint":
        mode = Code(f"checkpoint({literal(int(stage.checkpoint_every or 1))})")
    else:
        mode = ident(stage.backward, "backward mode")
    used.update(("OdeStage", "WeightSchedule"))
    weights = stage.weights if stage.weights_k is None else f"{stage.weights}({stage.weights_k})"
    doc = paragraph(
        f"{stage.depth} layers of {stage.integrator}, h = {stage.step:.6g}, weights {weights}, "
        f"backward {mode} (inverse {stage.inverse}). State {shape(stage.shape)}, "
        f"{stage.slots} weight slot(s) per residual, {stage.parameters:,} parameters."
    )
    return StageClass(
        name=name,
        stage=quoted(stage.name, "stage name"),
        stage_name=ident(stage.name, "stage name"),
        where=where(stage.origin),
        step_class=step_cls,
        doc=doc,
        residuals=residuals,
        depth=literal(int(stage.depth)),
        step=literal(float(stage.step)) if stage.step_fixed else None,
        schedule=schedule,
        backward=Code(f'"{mode}"'),
        stochastic=literal(any(s.stochastic for s in stage.residuals.values())),
    )


def importable() -> set[str]:
    """Every name the import block of a file without ``--standalone`` may bind: a network,
    step or stage class of that name would be shadowed by it, or shadow it (a network called
    ``sequence`` made a class ``Sequence`` that built itself until RecursionError)."""
    own = {
        n
        for n, v in vars(runtime_layers).items()
        if getattr(v, "__module__", None) == runtime_layers.__name__
    }
    return set(runtime.__all__) | own | {"IntegratorProgram", "Step", "AffineUpdate", "SwapUpdate"}


def _imports(ctx: ModelContext, vendored: Vendored | None) -> Code:
    imports = vendored.imports.copy() if vendored is not None else Imports()
    if any(sc.uses_math for sc in ctx.step_classes):
        imports.add_module("math")
    imports.add_module("torch")
    imports.add("torch", "Tensor")
    imports.add("torch", "nn")
    if vendored is None:
        used = set(ctx.used) - {"zero_init"}
        used |= {"CoefficientProbe", "IntegratorProgram", "Step", "State", "ResidualCall"}
        used.add("parse_backward")  # build() checks its backward before making any layer
        for sc in ctx.step_classes:
            text = sc.step + (sc.first or "")
            used |= {n for n in ("AffineUpdate", "SwapUpdate") if n in text}
        for name in sorted(used):
            package = "odedsl.runtime" if name in runtime.__all__ else "odedsl.runtime.layers"
            imports.add(package, name)
    return imports.render()
