"""Validated spec → ``torch.fx.GraphModule``: stem → ODE stages → transitions → head.

One ``emit_<part>`` per kind of network part, as an fx interpreter would have; every node is a
``call_module`` named after the spec's identifier, with the spec location in ``node.meta``.
Each ODE stage is one :class:`odedsl.runtime.OdeStage` module (its depth loop stays a loop).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import fx, nn

from odedsl.compiler.layers import build_sequence
from odedsl.diagnostics import Diagnostic, DslError, DslValueError
from odedsl.runtime import BackwardMode, Invert, OdeStage, WeightSchedule
from odedsl.spec.fingerprint import weights_fingerprint
from odedsl.spec.model import SectionSpec, StageSpec
from odedsl.spec.validate import ValidatedSpec

#: What :func:`build_graph_module` sets on the module, as an exported network class has them
#: (``odedsl.export.context.CLASS_ATTRIBUTES``): a stage of one of these names was a TypeError
#: ("cannot assign 'str' as child module") instead of a located error.
MODEL_ATTRIBUTES = ("input_shape", "output_shape", "network_name", "weights_fingerprint")


def class_name(network: str) -> str:
    """``heun_net`` → ``HeunNet``: the generated module's class name."""
    return "".join(part[:1].upper() + part[1:] for part in network.split("_") if part) or "Network"


def backward_of(stage: StageSpec) -> str:
    if stage.backward == "checkpoint":
        return f"checkpoint({stage.checkpoint_every})"
    return stage.backward


def build_stage(
    spec: ValidatedSpec, stage: StageSpec, backward: BackwardMode | None = None
) -> OdeStage:
    """The runtime module of one stage, with fresh parameters; ``backward`` overrides its mode."""
    integrator = spec.integrators[stage.integrator]
    program = integrator.program(stage.integrator_params)
    factories = {name: partial(build_sequence, seq) for name, seq in stage.residuals.items()}
    mode = backward if backward is not None else backward_of(stage)
    # any Invert: one with anchors (str 'invert(anchor_every=2)') is no less an inversion
    if (isinstance(mode, Invert) or mode == "invert") and stage.inverse == "none":
        # a ValueError too, as the stage itself (and so an exported build()) refuses it
        raise DslValueError(
            [
                Diagnostic(
                    "E231",
                    f"stage '{stage.name}' ({stage.origin}): integrator '{stage.integrator}' has "
                    f"no inverse ({stage.inverse_reason}), so backward=invert is not available",
                    None,
                    "without an inverse, use backward='store' (keeps every layer's state) or "
                    "backward='checkpoint(k)' (keeps every k-th state, recomputes the rest)",
                )
            ]
        )
    return OdeStage(
        stage.name,
        program,
        factories,
        depth=stage.depth,
        step=stage.step if stage.step_fixed else None,  # None: 1/N at every depth
        schedule=WeightSchedule(stage.weights, stage.weights_k),
        backward=mode,
        stochastic=any(seq.stochastic for seq in stage.residuals.values()),
    )


def emit_section(root: nn.Module, graph: fx.Graph, x: fx.Node, part: SectionSpec) -> fx.Node:
    root.add_module(part.name, build_sequence(part.body))
    node = graph.call_module(part.name, (x,))
    node.meta["origin"] = part.origin
    return node


def emit_stage(
    root: nn.Module,
    graph: fx.Graph,
    x: fx.Node,
    part: StageSpec,
    spec: ValidatedSpec,
    backward: BackwardMode | None,
) -> fx.Node:
    root.add_module(part.name, build_stage(spec, part, backward))
    node = graph.call_module(part.name, (x,))
    node.meta["origin"] = part.origin
    node.meta["integrator"] = part.integrator
    return node


def build_graph_module(
    spec: ValidatedSpec, *, backward: BackwardMode | None = None, dtype: torch.dtype | None = None
) -> fx.GraphModule:
    net = spec.network
    root = nn.Module()
    graph = fx.Graph()
    x = graph.placeholder("x")
    for part in net.parts:
        if hasattr(fx.GraphModule, part.name) or part.name in MODEL_ATTRIBUTES:
            raise DslError(
                [
                    Diagnostic(
                        "E120",
                        f"stage name '{part.name}' ({part.origin}) clashes with an attribute "
                        "of the compiled torch module",
                        None,
                        "rename the stage",
                    )
                ]
            )
        if isinstance(part, StageSpec):
            x = emit_stage(root, graph, x, part, spec, backward)
        else:
            x = emit_section(root, graph, x, part)
    graph.output(x)
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=class_name(net.name))
    gm.input_shape = tuple(net.input_shape)  # type: ignore[assignment]
    gm.output_shape = tuple(net.output_shape)  # type: ignore[assignment]
    gm.network_name = net.name  # type: ignore[assignment]
    # what save_checkpoint writes and load_checkpoint compares (odedsl.spec.fingerprint)
    gm.weights_fingerprint = weights_fingerprint(net)  # type: ignore[assignment]
    # GraphModule.__deepcopy__ rebuilds the module and keeps only what meta lists here
    # (copy.deepcopy dropped these attributes; pickle keeps them anyway)
    gm.meta.setdefault("_user_preserved_attributes", {}).update(
        input_shape=gm.input_shape,
        output_shape=gm.output_shape,
        network_name=gm.network_name,
        weights_fingerprint=gm.weights_fingerprint,
    )
    if dtype is not None:
        gm.to(dtype)
    return gm
