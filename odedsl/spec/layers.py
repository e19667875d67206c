"""The closed registry of layers a spec may use: typed arguments, shape rules, parameter counts.

Each layer's arguments are a pydantic model (``extra="forbid"``, ranges as field constraints);
its shape rule maps the input shape (no batch dimension) to the output shape or raises
:class:`ShapeError`. The torch modules that implement them live in ``odedsl.compiler.layers``,
keyed by the same names; a test checks both registries cover each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Shape = tuple[int, ...]


class ShapeError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class Args(BaseModel):
    """Base of every layer's arguments: strict, no unknown keywords."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    positional: ClassVar[tuple[str, ...]] = ()


PosInt = Field(ge=1, le=1 << 40)  # ranges against limits are checked later, with the Limits


class ConvArgs(Args):
    positional = ("out", "kernel")
    out: int = PosInt
    kernel: int = Field(default=3, ge=1)
    stride: int = Field(default=1, ge=1, le=64)
    padding: int = Field(default=0, ge=0, le=64)
    dilation: int = Field(default=1, ge=1, le=64)
    groups: int = Field(default=1, ge=1)
    bias: bool = True
    init: Literal["default", "zeros"] = "default"
    constraint: Literal["none", "antisymmetric"] = "none"


class ConvTransposeArgs(Args):
    positional = ("out", "kernel")
    out: int = PosInt
    kernel: int = Field(default=3, ge=1)
    stride: int = Field(default=1, ge=1, le=64)
    padding: int = Field(default=0, ge=0, le=64)
    output_padding: int = Field(default=0, ge=0, le=63)
    bias: bool = True
    init: Literal["default", "zeros"] = "default"


class LinearArgs(Args):
    positional = ("out",)
    out: int = PosInt
    bias: bool = True
    init: Literal["default", "zeros"] = "default"
    constraint: Literal["none", "antisymmetric"] = "none"


class NormArgs(Args):
    eps: float = Field(default=1e-5, gt=0, le=1)
    momentum: float = Field(default=0.1, ge=0, le=1)
    affine: bool = True
    init: Literal["ones", "zeros"] = "ones"


class GroupNormArgs(Args):
    positional = ("groups",)
    groups: int = PosInt
    eps: float = Field(default=1e-5, gt=0, le=1)
    affine: bool = True
    init: Literal["ones", "zeros"] = "ones"


class LayerNormArgs(Args):
    eps: float = Field(default=1e-5, gt=0, le=1)
    affine: bool = True
    init: Literal["ones", "zeros"] = "ones"


class NoArgs(Args):
    pass


class LeakyArgs(Args):
    positional = ("slope",)
    slope: float = Field(default=0.01, ge=0, le=1)


class PoolArgs(Args):
    positional = ("kernel", "stride")
    kernel: int = Field(default=2, ge=1)
    stride: int | None = Field(default=None, ge=1, le=64)
    padding: int = Field(default=0, ge=0, le=32)


class AdaptivePoolArgs(Args):
    positional = ("size",)
    size: int = Field(default=1, ge=1)


class DropoutArgs(Args):
    positional = ("p",)
    p: float = Field(default=0.5, ge=0, lt=1)


class PadArgs(Args):
    positional = ("out",)
    out: int = PosInt


class ScaleArgs(Args):
    positional = ("factor",)
    factor: float = Field(default=1.0, ge=-1e6, le=1e6)


class TransposeArgs(Args):
    """``transpose(K)``: apply the adjoint of the linear map of layer ``K`` (its weight reused)."""

    positional = ("of",)
    of: str
    bias: bool = False


@dataclass(frozen=True)
class LayerKind:
    name: str
    args: type[Args]
    shape: Callable[[Shape, Args], Shape]
    params: Callable[[Shape, Args], int]
    prefix: str  # readable module names: conv1, bn2, ...
    doc: str
    stochastic: bool = False


def _need(shape: Shape, rank: int | tuple[int, ...], what: str) -> None:
    ranks = (rank,) if isinstance(rank, int) else rank
    if len(shape) not in ranks:
        names = {1: "a vector [features]", 3: "an image [channels, height, width]", 2: "[C, L]"}
        wanted = " or ".join(names.get(r, f"rank {r}") for r in ranks)
        hint = _rank_hint(what, ranks, len(shape), wanted)
        raise ShapeError(f"{what} needs {wanted}, got shape {list(shape)}", hint)


#: The layer doing the same on the other kind of tensor (image ↔ vector), for rank hints.
_COUNTERPART = {
    "conv2d": "linear",
    "conv_transpose2d": "linear",
    "batchnorm2d": "batchnorm1d",
    "batchnorm1d": "batchnorm2d",
    "dropout2d": "dropout",
}


def _rank_hint(what: str, ranks: tuple[int, ...], got: int, wanted: str) -> str:
    alt = _COUNTERPART.get(what)
    if ranks == (3,) and got == 1:  # an image layer given a vector
        if alt:
            return f"on a vector use {alt} instead"
        return f"{what} applies to images: place it before any `flatten`"
    if 3 not in ranks and got == 3:  # a vector layer given an image
        if alt:
            return f"on an image use {alt}, or flatten it first"
        return f"flatten the image first, e.g. `adaptive_avgpool2d(1) flatten` before {what}"
    return f"give {what} {wanted}"


def _conv_out(size: int, k: int, s: int, p: int, d: int, what: str) -> int:
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ShapeError(
            f"{what} with kernel {k} does not fit input size {size}",
            "use a smaller kernel or more padding",
        )
    return out


def _conv_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, ConvArgs)
    _need(shape, 3, "conv2d")
    c, hgt, wid = shape
    if c % a.groups or a.out % a.groups:
        common = math.gcd(c, a.out)
        raise ShapeError(
            f"groups={a.groups} must divide input channels {c} and out {a.out}",
            f"use a groups value that divides {common}, e.g. groups={common}"
            if common > 1
            else f"{c} and {a.out} have no common divisor but 1: use groups=1 or change out",
        )
    if a.constraint == "antisymmetric":
        if (
            a.out != c
            or a.stride != 1
            or a.kernel % 2 == 0
            or a.padding != a.kernel // 2
            or a.groups != 1
            or a.dilation != 1
        ):
            raise ShapeError(
                "an antisymmetric convolution (K − Kᵀ) must map a shape to itself",
                f"use conv2d({c}, kernel={a.kernel | 1}, padding={(a.kernel | 1) // 2}), stride 1",
            )
    return (
        a.out,
        _conv_out(hgt, a.kernel, a.stride, a.padding, a.dilation, "conv2d"),
        _conv_out(wid, a.kernel, a.stride, a.padding, a.dilation, "conv2d"),
    )


def _conv_params(shape: Shape, a: Args) -> int:
    assert isinstance(a, ConvArgs)
    return a.out * (shape[0] // a.groups) * a.kernel**2 + (a.out if a.bias else 0)


def _convt_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, ConvTransposeArgs)
    _need(shape, 3, "conv_transpose2d")
    _, hgt, wid = shape

    def size(n: int) -> int:
        out = (n - 1) * a.stride - 2 * a.padding + a.kernel + a.output_padding
        if out < 1:
            raise ShapeError(
                f"conv_transpose2d output size {out} is empty",
                "use less padding, or a larger kernel, stride or output_padding",
            )
        return out

    return (a.out, size(hgt), size(wid))


def _convt_params(shape: Shape, a: Args) -> int:
    assert isinstance(a, ConvTransposeArgs)
    return shape[0] * a.out * a.kernel**2 + (a.out if a.bias else 0)


def _linear_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, LinearArgs)
    _need(shape, (1, 2), "linear")
    if a.constraint == "antisymmetric" and a.out != shape[-1]:
        raise ShapeError(
            "an antisymmetric linear map (K − Kᵀ) must keep the feature count",
            f"use linear({shape[-1]}, constraint=antisymmetric)",
        )
    return (*shape[:-1], a.out)


def _linear_params(shape: Shape, a: Args) -> int:
    assert isinstance(a, LinearArgs)
    return shape[-1] * a.out + (a.out if a.bias else 0)


def _same(shape: Shape, a: Args) -> Shape:
    return shape


def _zero(shape: Shape, a: Args) -> int:
    return 0


def _norm_shape(rank: int | tuple[int, ...], name: str) -> Callable[[Shape, Args], Shape]:
    def rule(shape: Shape, a: Args) -> Shape:
        _need(shape, rank, name)
        return shape

    return rule


def _channel_affine(shape: Shape, a: Args) -> int:
    return 2 * shape[0] if getattr(a, "affine", True) else 0


def _groupnorm_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, GroupNormArgs)
    _need(shape, (1, 3), "groupnorm")
    if shape[0] % a.groups:
        fits = max(d for d in range(1, min(a.groups, shape[0]) + 1) if shape[0] % d == 0)
        raise ShapeError(
            f"groupnorm: {a.groups} groups do not divide {shape[0]} channels",
            f"use a number of groups that divides {shape[0]}, e.g. groupnorm({fits})",
        )
    return shape


def _layernorm_params(shape: Shape, a: Args) -> int:
    n = 1
    for d in shape:
        n *= d
    return 2 * n if getattr(a, "affine", True) else 0


def _pool_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, PoolArgs)
    _need(shape, 3, "pooling")
    stride = a.stride or a.kernel
    if a.padding * 2 > a.kernel:
        raise ShapeError(
            "pooling padding must be at most half the kernel",
            f"use padding={a.kernel // 2} or less, or a larger kernel",
        )
    return (
        shape[0],
        _conv_out(shape[1], a.kernel, stride, a.padding, 1, "pooling"),
        _conv_out(shape[2], a.kernel, stride, a.padding, 1, "pooling"),
    )


def _adaptive_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, AdaptivePoolArgs)
    _need(shape, 3, "adaptive_avgpool2d")
    return (shape[0], a.size, a.size)


def _flatten_shape(shape: Shape, a: Args) -> Shape:
    n = 1
    for d in shape:
        n *= d
    return (n,)


def _pad_shape(shape: Shape, a: Args) -> Shape:
    assert isinstance(a, PadArgs)
    _need(shape, (1, 3), "pad_channels")
    if a.out < shape[0]:
        raise ShapeError(
            f"pad_channels({a.out}) cannot shrink {shape[0]} channels",
            "zero padding only adds channels",
        )
    return (a.out, *shape[1:])


_ACTIVATION_DOC = "elementwise activation"

LAYERS: dict[str, LayerKind] = {
    k.name: k
    for k in [
        LayerKind("conv2d", ConvArgs, _conv_shape, _conv_params, "conv", "2-d convolution"),
        LayerKind(
            "conv_transpose2d",
            ConvTransposeArgs,
            _convt_shape,
            _convt_params,
            "convt",
            "2-d transposed convolution",
        ),
        LayerKind("linear", LinearArgs, _linear_shape, _linear_params, "linear", "affine map"),
        LayerKind(
            "batchnorm1d",
            NormArgs,
            _norm_shape((1, 2), "batchnorm1d"),
            _channel_affine,
            "bn",
            "batch normalisation over features",
        ),
        LayerKind(
            "batchnorm2d",
            NormArgs,
            _norm_shape(3, "batchnorm2d"),
            _channel_affine,
            "bn",
            "batch normalisation over channels",
        ),
        LayerKind(
            "groupnorm",
            GroupNormArgs,
            _groupnorm_shape,
            _channel_affine,
            "gn",
            "group normalisation",
        ),
        LayerKind(
            "layernorm",
            LayerNormArgs,
            _same,
            _layernorm_params,
            "ln",
            "layer normalisation over all non-batch dimensions",
        ),
        LayerKind("relu", NoArgs, _same, _zero, "relu", _ACTIVATION_DOC),
        LayerKind("tanh", NoArgs, _same, _zero, "tanh", _ACTIVATION_DOC),
        LayerKind("sigmoid", NoArgs, _same, _zero, "sigmoid", _ACTIVATION_DOC),
        LayerKind("gelu", NoArgs, _same, _zero, "gelu", _ACTIVATION_DOC),
        LayerKind("silu", NoArgs, _same, _zero, "silu", _ACTIVATION_DOC),
        LayerKind("leaky_relu", LeakyArgs, _same, _zero, "lrelu", _ACTIVATION_DOC),
        LayerKind("avgpool", PoolArgs, _pool_shape, _zero, "avgpool", "average pooling"),
        LayerKind("maxpool", PoolArgs, _pool_shape, _zero, "maxpool", "max pooling"),
        LayerKind(
            "adaptive_avgpool2d",
            AdaptivePoolArgs,
            _adaptive_shape,
            _zero,
            "pool",
            "average pooling to a fixed size",
        ),
        LayerKind("flatten", NoArgs, _flatten_shape, _zero, "flatten", "flatten to a vector"),
        LayerKind("dropout", DropoutArgs, _same, _zero, "dropout", "dropout", stochastic=True),
        LayerKind(
            "dropout2d",
            DropoutArgs,
            _norm_shape(3, "dropout2d"),
            _zero,
            "dropout",
            "channel dropout",
            stochastic=True,
        ),
        LayerKind("identity", NoArgs, _same, _zero, "identity", "does nothing"),
        LayerKind(
            "pad_channels",
            PadArgs,
            _pad_shape,
            _zero,
            "pad",
            "zero channel padding (reversible-network transitions)",
        ),
        LayerKind("scale", ScaleArgs, _same, _zero, "scale", "multiply by a constant"),
        LayerKind(
            "transpose",
            TransposeArgs,
            _same,
            _zero,
            "transpose",
            "adjoint of an earlier conv2d/linear (`as K`), reusing its weight: Kᵀ",
        ),
    ]
}
