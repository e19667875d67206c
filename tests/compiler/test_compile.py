"""odedsl.compile: the fx module's structure, names, modes, and forward/gradients against a
hand-written PyTorch loop of the paper's equations."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

import odedsl
from odedsl import DslError

SPEC = """\
network small(depth: int = 6, width: int = 4) {
    input image[2, 6, 6]
    stem { conv2d(width, kernel=3, padding=1) }
    stage body = ode(depth) {
        integrator INTEGRATOR
        weights WEIGHTS
        backward BACKWARD
        residual { conv2d(width, kernel=3, padding=1) tanh }
    }
    head { flatten linear(3) }
}
"""


def spec(integrator: str = "euler", weights: str = "untied", backward: str = "store") -> str:
    return (
        SPEC.replace("INTEGRATOR", integrator)
        .replace("WEIGHTS", weights)
        .replace("BACKWARD", backward)
    )


def test_graph_structure_and_names() -> None:
    model = odedsl.compile(spec())
    assert isinstance(model, fx.GraphModule)
    assert model.input_shape == (2, 6, 6)
    ops = [(n.op, n.target) for n in model.graph.nodes]
    assert ops == [
        ("placeholder", "x"),
        ("call_module", "stem"),
        ("call_module", "body"),
        ("call_module", "head"),
        ("output", "output"),
    ]
    keys = list(model.state_dict())
    assert "body.f.0.conv1.weight" in keys and "body.f.5.conv1.bias" in keys
    assert "body.f.6.conv1.weight" not in keys  # Euler: N slots
    assert "stem.conv1.weight" in keys and "head.linear1.weight" in keys
    assert type(model).__name__ == "Small"
    assert "body" in model.code


def hand_written_euler(model: nn.Module, x: torch.Tensor, depth: int) -> torch.Tensor:
    """x_{n+1} = x_n + (1/N) f(x_n, θ_n) (Sander et al. 2022, eq. 1), written out by hand."""
    x = model.stem.conv1(x)
    for n in range(depth):
        f = getattr(model.body.f, str(n))
        x = x + (1.0 / depth) * torch.tanh(f.conv1(x))
    return model.head.linear1(x.flatten(1))


def hand_written_heun(model: nn.Module, x: torch.Tensor, depth: int) -> torch.Tensor:
    """HeunNet (eq. 8): the corrector uses θ_{n+1}."""
    h = 1.0 / depth
    f = [getattr(model.body.f, str(n)) for n in range(depth + 1)]
    x = model.stem.conv1(x)
    for n in range(depth):
        k1 = torch.tanh(f[n].conv1(x))
        y = x + h * k1
        x = x + h / 2 * (k1 + torch.tanh(f[n + 1].conv1(y)))
    return model.head.linear1(x.flatten(1))


@pytest.mark.parametrize("backward", ["store", "checkpoint(2)", "invert"])
@pytest.mark.parametrize(
    ("integrator", "reference"), [("euler", hand_written_euler), ("heun", hand_written_heun)]
)
def test_forward_matches_hand_written_loop(backward: str, integrator: str, reference) -> None:
    torch.manual_seed(0)
    model = odedsl.compile(spec(integrator, backward=backward), dtype=torch.float64)
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(model, x, 6), rtol=1e-12, atol=1e-12)


def test_backward_override_and_gradients_of_exact_modes() -> None:
    torch.manual_seed(1)
    text = spec("euler")
    store = odedsl.compile(text, dtype=torch.float64)
    ckpt = odedsl.compile(text, dtype=torch.float64, backward="checkpoint(3)")
    ckpt.load_state_dict(store.state_dict())
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for model in (store, ckpt):
        x.grad = None
        model.zero_grad()
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()] + [x.grad.clone()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_param_overrides_and_dtype() -> None:
    model = odedsl.compile(spec(), depth=3, dtype=torch.float64)
    assert model.body.depth == 3
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize(
    ("weights", "slots"), [("tied", 1), ("shared(2)", 2), ("interpolated(3)", 3)]
)
def test_weight_modes(weights: str, slots: int) -> None:
    model = odedsl.compile(spec(weights=weights))
    assert len(model.body.f) == slots
    out = model(torch.randn(2, 2, 6, 6))
    assert out.shape == (2, 3)


def test_bad_backward_override_is_a_dsl_error() -> None:
    with pytest.raises(DslError):
        odedsl.compile(spec(), backward="sideways")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backward": 1}, "backward mode must be .store., .invert., .checkpoint"),
        ({"dtype": "float64"}, r"dtype must be a torch\.dtype"),
        ({"limits": "x"}, r"limits must be an odedsl\.Limits"),
        ({"network": 1}, r"network must be the name of a network \(str\)"),
    ],
)
def test_arguments_of_the_wrong_type_say_so(kwargs: dict, message: str) -> None:
    """Not an AttributeError or "Invalid device string" from deep inside."""
    with pytest.raises(TypeError, match=message):
        odedsl.compile(spec(), **kwargs)


@pytest.mark.parametrize("source", [None, 3, b"network n() {}"])
def test_a_source_that_is_no_text_says_so(source: object) -> None:
    with pytest.raises(TypeError, match="takes a path, a spec's text"):
        odedsl.compile(source)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parse takes a spec's text \(str\)"):
        odedsl.parse(source)  # type: ignore[arg-type]


def test_state_dict_round_trip() -> None:
    a = odedsl.compile(spec("heun"))
    b = odedsl.compile(spec("heun"))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 2, 6, 6)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize(
    "name", ["input_shape", "output_shape", "network_name", "weights_fingerprint"]
)
def test_a_stage_named_like_a_model_attribute_is_a_located_error(name: str) -> None:
    """compile sets these on the module: such a stage was torch's TypeError "cannot assign
    'str' as child module", unlocated."""
    with pytest.raises(DslError, match=rf"stage name '{name}' \(<spec>:4:\d+\) clashes") as err:
        odedsl.compile(spec().replace("stage body", f"stage {name}"))
    assert err.value.diagnostics[0].code == "E120"


def test_the_weights_fingerprint_leaves_out_what_the_same_weights_run_under() -> None:
    """Depth and backward mode change neither what the weights mean nor the fingerprint a
    weights file carries; an integrator or a layer kind of the same shapes does."""
    base = odedsl.compile(spec("heun", "interpolated(3)")).weights_fingerprint
    assert base.startswith("w2:")
    same = odedsl.compile(spec("heun", "interpolated(3)", "invert"), depth=9)
    assert same.weights_fingerprint == base
    trained_otherwise = spec("heun", "interpolated(3)").replace("tanh", "dropout(0.3) tanh")
    dropout = odedsl.compile(trained_otherwise).weights_fingerprint
    assert odedsl.compile(trained_otherwise.replace("0.3", "0.1")).weights_fingerprint == dropout
    for other in (
        spec("euler", "interpolated(3)"),
        spec("heun", "interpolated(3)").replace("tanh", "relu"),
    ):
        assert odedsl.compile(other).weights_fingerprint != base


CONV = "conv2d(width, kernel=3, padding=1"


@pytest.mark.parametrize(
    ("layer", "other"),
    [
        (f"{CONV})", f"{CONV}, constraint=antisymmetric)"),
        (f"{CONV})", "conv2d(width, kernel=3, padding=2, dilation=2)"),
        (f"{CONV}) leaky_relu(0.01)", f"{CONV}) leaky_relu(0.5)"),
    ],
)
def test_the_weights_fingerprint_tells_apart_layers_that_read_the_same_weights_otherwise(
    layer: str, other: str
) -> None:
    """Review 2026-12-03: the fingerprint keeps each layer's kind, name and shapes but none of
    its arguments, so weights saved from a network load silently (load_checkpoint) into one
    whose residual computes another function of the same tensors: an antisymmetric
    constraint (K - Kᵀ, the midpoint network's), a dilation, an activation's slope."""
    residual = "residual { conv2d(width, kernel=3, padding=1) tanh }"
    a = odedsl.compile(spec().replace(residual, f"residual {{ {layer} tanh }}"))
    b = odedsl.compile(spec().replace(residual, f"residual {{ {other} tanh }}"))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert a.weights_fingerprint != b.weights_fingerprint
