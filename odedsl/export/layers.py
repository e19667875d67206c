"""Spec layers → constructor calls in generated code: one entry per layer kind, as data.

Mirrors :data:`odedsl.compiler.layers.BUILDERS` (a test checks that both cover the same kinds and
build the same modules). Keyword arguments equal to torch's defaults are left out, so a line
reads as a person would write it: ``nn.Conv2d(16, 16, 3, padding=1, bias=False)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from odedsl.export.safety import BUG, Code, literal, quoted, refuse
from odedsl.spec.model import LayerSpec


@dataclass(frozen=True)
class Call:
    """``ctor(*args, **kwargs)``, wrapped in ``zero_init`` for ``init=zeros``."""

    ctor: str  # a torch.nn class ("nn.Conv2d") or a runtime class ("PadChannels")
    args: tuple[object, ...] = ()
    kwargs: tuple[tuple[str, object, object], ...] = ()  # (name, value, torch's default)
    zero: str | None = None  # "all": weight and bias, "weight": the weight only

    @property
    def runtime(self) -> str | None:
        """The runtime class this call needs imported, if any."""
        return None if self.ctor.startswith("nn.") else self.ctor

    def render(self) -> Code:
        args = [literal(a) if not isinstance(a, Code) else a for a in self.args]
        args += [f"{k}={literal(v)}" for k, v, default in self.kwargs if v != default]
        call = f"{self.ctor}({', '.join(args)})"
        if self.zero == "all":
            return Code(f"zero_init({call})")
        if self.zero == "weight":
            return Code(f"zero_init({call}, bias=False)")
        return Code(call)


def _conv2d(s: LayerSpec) -> Call:
    a = s.args
    kw = (
        ("stride", a["stride"], 1),
        ("padding", a["padding"], 0),
        ("dilation", a["dilation"], 1),
        ("groups", a["groups"], 1),
        ("bias", a["bias"], True),
    )
    ctor = "AntisymmetricConv2d" if a["constraint"] == "antisymmetric" else "nn.Conv2d"
    return Call(ctor, (s.in_shape[0], a["out"], a["kernel"]), kw, _zero(a["init"] == "zeros"))


def _conv_transpose2d(s: LayerSpec) -> Call:
    a = s.args
    kw = (
        ("stride", a["stride"], 1),
        ("padding", a["padding"], 0),
        ("output_padding", a["output_padding"], 0),
        ("bias", a["bias"], True),
    )
    zero = _zero(a["init"] == "zeros")
    return Call("nn.ConvTranspose2d", (s.in_shape[0], a["out"], a["kernel"]), kw, zero)


def _linear(s: LayerSpec) -> Call:
    a = s.args
    ctor = "AntisymmetricLinear" if a["constraint"] == "antisymmetric" else "nn.Linear"
    kw = (("bias", a["bias"], True),)
    return Call(ctor, (s.in_shape[-1], a["out"]), kw, _zero(a["init"] == "zeros"))


def _zero(yes: bool, what: str = "all") -> str | None:
    return what if yes else None


def _norm(ctor: str) -> Callable[[LayerSpec], Call]:
    def build(s: LayerSpec) -> Call:
        a = s.args
        kw = (
            ("eps", a["eps"], 1e-5),
            ("momentum", a["momentum"], 0.1),
            ("affine", a["affine"], True),
        )
        return Call(
            ctor, (s.in_shape[0],), kw, _zero(a["affine"] and a["init"] == "zeros", "weight")
        )

    return build


def _groupnorm(s: LayerSpec) -> Call:
    a = s.args
    kw = (("eps", a["eps"], 1e-5), ("affine", a["affine"], True))
    zero = _zero(a["affine"] and a["init"] == "zeros", "weight")
    return Call("nn.GroupNorm", (a["groups"], s.in_shape[0]), kw, zero)


def _layernorm(s: LayerSpec) -> Call:
    a = s.args
    kw = (("eps", a["eps"], 1e-5), ("elementwise_affine", a["affine"], True))
    zero = _zero(a["affine"] and a["init"] == "zeros", "weight")
    return Call("nn.LayerNorm", (tuple(s.in_shape),), kw, zero)


def _pool(ctor: str) -> Callable[[LayerSpec], Call]:
    def build(s: LayerSpec) -> Call:
        a = s.args
        stride = a["stride"] or a["kernel"]
        return Call(
            ctor, (a["kernel"],), (("stride", stride, a["kernel"]), ("padding", a["padding"], 0))
        )

    return build


def _plain(ctor: str, *names: str) -> Callable[[LayerSpec], Call]:
    return lambda s: Call(ctor, tuple(s.args[n] for n in names))


def _transpose(s: LayerSpec) -> Call:
    if s.ref is None:
        raise refuse(
            "E260",
            f"transpose layer {s.name!r} has no reference",
            hint=f"{BUG}: validation gives every transpose layer the layer it transposes",
        )
    channels = s.out_shape[0] if len(s.out_shape) == 3 else s.out_shape[-1]
    ref = quoted(s.ref, "layer name", s.origin)
    return Call("TransposeOf", (ref, channels), (("bias", s.args["bias"], False),))


#: Layer kind → the constructor call that builds it (``odedsl.compiler.layers.BUILDERS``'s twin).
CALLS: dict[str, Callable[[LayerSpec], Call]] = {
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "linear": _linear,
    "batchnorm1d": _norm("nn.BatchNorm1d"),
    "batchnorm2d": _norm("nn.BatchNorm2d"),
    "groupnorm": _groupnorm,
    "layernorm": _layernorm,
    "relu": _plain("nn.ReLU"),
    "tanh": _plain("nn.Tanh"),
    "sigmoid": _plain("nn.Sigmoid"),
    "gelu": _plain("nn.GELU"),
    "silu": _plain("nn.SiLU"),
    "leaky_relu": _plain("nn.LeakyReLU", "slope"),
    "avgpool": _pool("nn.AvgPool2d"),
    "maxpool": _pool("nn.MaxPool2d"),
    "adaptive_avgpool2d": _plain("nn.AdaptiveAvgPool2d", "size"),
    "flatten": _plain("nn.Flatten"),
    "dropout": _plain("nn.Dropout", "p"),
    "dropout2d": _plain("nn.Dropout2d", "p"),
    "identity": _plain("nn.Identity"),
    "pad_channels": _plain("PadChannels", "out"),
    "scale": _plain("Scale", "factor"),
    "transpose": _transpose,
}


def layer_call(spec: LayerSpec) -> Call:
    """The constructor call of one validated layer; unknown kinds are refused."""
    if spec.kind not in CALLS:
        raise refuse(
            "E260",
            f"layer kind {spec.kind!r} ({spec.origin}) has no exporter",
            hint=f"{BUG}: every layer kind the spec language accepts must have an entry in "
            "odedsl.export.layers.CALLS",
        )
    return CALLS[spec.kind](spec)
