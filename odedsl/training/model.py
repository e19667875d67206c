"""Fitting a spec to a data set: parameters named after the data, then one shape check.

A network that declares ``channels``/``size``/``classes`` gets them from the data unless the
user sets them; ``stride`` (when declared) shrinks with the image, ``max(1, stride·size //
default_size)``, so a stem written for 32×32 keeps 8×8 digits at 8×8 instead of 3×3.
Anything else that disagrees is a located error naming both shapes, before any tensor exists;
a network whose input is not an image cannot take these data sets at all, and is told so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import fx

from odedsl.diagnostics import Diagnostic, DslError, by_face
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec
from odedsl.spec.validate import ValidatedSpec
from odedsl.training.data import DataBundle

SpecSource = str | os.PathLike[str] | ValidatedSpec


@dataclass
class FittedSpec:
    """The validated spec for this data, and which parameters came from the data."""

    spec: ValidatedSpec
    from_data: dict[str, Value]
    overrides: dict[str, Value]

    @property
    def name(self) -> str:
        return self.spec.network.name

    @property
    def params(self) -> dict[str, Value]:
        return dict(self.spec.network.params)


def data_params(
    declared: dict[str, Value], bundle: DataBundle, overrides: dict[str, Value]
) -> dict[str, Value]:
    """The parameters the data decides: those declared by the network and not ``--set``."""
    out: dict[str, Value] = {}
    for name, value in (
        ("channels", bundle.channels),
        ("size", bundle.size),
        ("classes", bundle.classes),
    ):
        if name in declared and name not in overrides:
            out[name] = value
    size0, stride0 = declared.get("size"), declared.get("stride")
    if "size" in out and "stride" not in overrides and isinstance(stride0, int):
        if isinstance(size0, int) and size0 > 0 and bundle.size < size0:
            stride = max(1, stride0 * bundle.size // size0)
            if stride != stride0:
                out["stride"] = stride
    return out


def _located(spec: ValidatedSpec) -> str:
    return f" ({spec.network.origin})" if spec.network.origin else ""


def fit_spec(
    source: SpecSource,
    bundle: DataBundle,
    overrides: dict[str, Value] | None = None,
    network: str | None = None,
) -> FittedSpec:
    """Load ``source`` with the data's parameters and the user's, and check the shapes.

    The first load, which only reads the declared parameters, already takes the user's
    overrides: limits (``ODEDSL_MAX_DEPTH``) must judge the network asked for, not defaults.
    """
    overrides = dict(overrides or {})
    if isinstance(source, ValidatedSpec):
        spec, from_data = source, {}
    else:
        declared = dict(load_spec(source, network=network, **overrides).network.params)
        from_data = data_params(declared, bundle, overrides)
        spec = load_spec(source, network=network, **{**from_data, **overrides})
    net = spec.network
    want = bundle.shape
    if net.input_kind != "image":
        shape = ", ".join(map(str, net.input_shape))
        raise DslError(
            [
                Diagnostic(
                    "E220",
                    f"network '{net.name}'{_located(spec)} takes input {net.input_kind}[{shape}], "
                    f"but the data sets of odedsl train ('{bundle.name}' here) are images, which "
                    "need input image[C, H, W]",
                    None,
                    "train it on your own data: from Python (odedsl.compile(spec) is an "
                    "nn.Module), or with the script `odedsl build` writes "
                    f"(train_{net.name}.py: replace its synthetic() data with yours)",
                )
            ]
        )
    if tuple(net.input_shape) != want:
        raise DslError(
            [
                Diagnostic(
                    "E220",
                    f"network '{net.name}'{_located(spec)} takes input {list(net.input_shape)} "
                    f"but the data '{bundle.name}' has images {list(want)}",
                    None,
                    "declare network parameters named channels and size (used for the input) "
                    f"or {by_face('--set them', 'set them in overrides')} to the data's shape",
                )
            ]
        )
    if tuple(net.output_shape) != (bundle.classes,):
        raise DslError(
            [
                Diagnostic(
                    "E220",
                    f"network '{net.name}'{_located(spec)} outputs {list(net.output_shape)} "
                    f"but the data '{bundle.name}' has {bundle.classes} classes",
                    None,
                    "declare a network parameter named classes used by the last linear layer, "
                    f"or {by_face('--set it', 'set it in overrides')} to {bundle.classes}",
                )
            ]
        )
    return FittedSpec(spec, from_data, overrides)


def build_model(
    fitted: FittedSpec, backward: str | None = None, dtype: torch.dtype | None = None
) -> fx.GraphModule:
    """``odedsl.compile`` of the fitted spec (parameters drawn from the global RNG)."""
    from odedsl.compiler import compile as compile_spec

    return compile_spec(fitted.spec, backward=backward, dtype=dtype)
