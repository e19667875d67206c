"""Spec layers → torch modules: one builder per entry of ``odedsl.spec.layers.LAYERS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from odedsl.runtime.layers import (
    AntisymmetricConv2d,
    AntisymmetricLinear,
    PadChannels,
    Scale,
    Sequence,
    TransposeOf,
)
from odedsl.spec.model import LayerSpec, SequenceSpec

Builder = Callable[[LayerSpec], nn.Module]


def _conv2d(spec: LayerSpec) -> nn.Module:
    a = spec.args
    cls = AntisymmetricConv2d if a["constraint"] == "antisymmetric" else nn.Conv2d
    m = cls(
        spec.in_shape[0],
        a["out"],
        a["kernel"],
        stride=a["stride"],
        padding=a["padding"],
        dilation=a["dilation"],
        groups=a["groups"],
        bias=a["bias"],
    )
    return _init(m, a["init"])


def _conv_transpose2d(spec: LayerSpec) -> nn.Module:
    a = spec.args
    m = nn.ConvTranspose2d(
        spec.in_shape[0],
        a["out"],
        a["kernel"],
        stride=a["stride"],
        padding=a["padding"],
        output_padding=a["output_padding"],
        bias=a["bias"],
    )
    return _init(m, a["init"])


def _linear(spec: LayerSpec) -> nn.Module:
    a = spec.args
    cls = AntisymmetricLinear if a["constraint"] == "antisymmetric" else nn.Linear
    return _init(cls(spec.in_shape[-1], a["out"], bias=a["bias"]), a["init"])


def _init(module: nn.Module, how: str) -> nn.Module:
    if how == "zeros":
        nn.init.zeros_(module.weight)  # type: ignore[arg-type]
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)  # type: ignore[arg-type]
    return module


def _norm(cls: type[nn.Module]) -> Builder:
    def build(spec: LayerSpec) -> nn.Module:
        a = spec.args
        m = cls(spec.in_shape[0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"])
        if a["affine"] and a["init"] == "zeros":
            nn.init.zeros_(m.weight)  # type: ignore[arg-type]
        return m

    return build


def _groupnorm(spec: LayerSpec) -> nn.Module:
    a = spec.args
    m = nn.GroupNorm(a["groups"], spec.in_shape[0], eps=a["eps"], affine=a["affine"])
    if a["affine"] and a["init"] == "zeros":
        nn.init.zeros_(m.weight)
    return m


def _layernorm(spec: LayerSpec) -> nn.Module:
    a = spec.args
    m = nn.LayerNorm(list(spec.in_shape), eps=a["eps"], elementwise_affine=a["affine"])
    if a["affine"] and a["init"] == "zeros":
        nn.init.zeros_(m.weight)
    return m


def _pool(cls: type[nn.Module]) -> Builder:
    def build(spec: LayerSpec) -> nn.Module:
        a = spec.args
        return cls(a["kernel"], stride=a["stride"] or a["kernel"], padding=a["padding"])

    return build


def _simple(factory: Callable[[dict[str, Any]], nn.Module]) -> Builder:
    return lambda spec: factory(spec.args)


def _transpose(spec: LayerSpec) -> nn.Module:
    assert spec.ref is not None
    channels = spec.out_shape[0] if len(spec.out_shape) == 3 else spec.out_shape[-1]
    return TransposeOf(spec.ref, channels, bias=spec.args["bias"])


BUILDERS: dict[str, Builder] = {
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "linear": _linear,
    "batchnorm1d": _norm(nn.BatchNorm1d),
    "batchnorm2d": _norm(nn.BatchNorm2d),
    "groupnorm": _groupnorm,
    "layernorm": _layernorm,
    "relu": _simple(lambda a: nn.ReLU()),
    "tanh": _simple(lambda a: nn.Tanh()),
    "sigmoid": _simple(lambda a: nn.Sigmoid()),
    "gelu": _simple(lambda a: nn.GELU()),
    "silu": _simple(lambda a: nn.SiLU()),
    "leaky_relu": _simple(lambda a: nn.LeakyReLU(a["slope"])),
    "avgpool": _pool(nn.AvgPool2d),
    "maxpool": _pool(nn.MaxPool2d),
    "adaptive_avgpool2d": _simple(lambda a: nn.AdaptiveAvgPool2d(a["size"])),
    "flatten": _simple(lambda a: nn.Flatten()),
    "dropout": _simple(lambda a: nn.Dropout(a["p"])),
    "dropout2d": _simple(lambda a: nn.Dropout2d(a["p"])),
    "identity": _simple(lambda a: nn.Identity()),
    "pad_channels": _simple(lambda a: PadChannels(a["out"])),
    "scale": _simple(lambda a: Scale(a["factor"])),
    "transpose": _transpose,
}


def build_sequence(spec: SequenceSpec) -> Sequence:
    """A fresh module (fresh parameters) for a validated layer sequence."""
    return Sequence({layer.name: BUILDERS[layer.kind](layer) for layer in spec.layers})
