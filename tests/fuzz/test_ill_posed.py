"""The kink finder the differential fuzz test relies on: it must find the points where
``invert`` and ``store`` may legitimately differ, and nothing else."""

from __future__ import annotations

import pytest
import torch

import odedsl

from .ill_posed import ill_posed_points

# A ReLU empties some rows of a 4-wide group, groupnorm keeps them exactly 0, and the stage's
# residual normalises each (constant) half-state row and applies a ReLU: exact zeros on its
# kink, amplified by 1/sqrt(eps). Found by the differential fuzz test (reversible_heun).
KINKED = """network k() {
    input vector[8]
    stem { linear(8) relu groupnorm(4) }
    stage s = ode(8) { integrator additive_coupling residual { layernorm relu linear(4) } }
    head { linear(3) }
}"""
SMOOTH = KINKED.replace("relu groupnorm(4)", "tanh groupnorm(4)")


def _grads(text: str, mode: str, state: dict[str, torch.Tensor]) -> torch.Tensor:
    model = odedsl.compile(text, backward=mode, dtype=torch.float64)
    model.load_state_dict(state)
    torch.manual_seed(103)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    model(x).square().mean().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()] + [x.grad.flatten()])


def _kinks(text: str, state: dict[str, torch.Tensor]) -> list[str]:
    model = odedsl.compile(text, backward="store", dtype=torch.float64)
    model.load_state_dict(state)
    torch.manual_seed(103)
    x = torch.randn(3, 8, dtype=torch.float64)
    return ill_posed_points(model, lambda: model(x))


def _state(text: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return odedsl.compile(text, dtype=torch.float64).state_dict()


def test_a_disagreement_at_a_kink_is_found():
    state = _state(KINKED)
    store, invert = _grads(KINKED, "store", state), _grads(KINKED, "invert", state)
    assert float((store - invert).norm() / store.norm()) > 1e-3  # the one-sided derivatives
    # the layernorm of the emptied (constant) rows, and the relu its zeros meet
    assert _kinks(KINKED, state) == ["s.f.0.ln1", "s.f.0.relu1"]


def test_no_kink_and_no_disagreement_without_exact_zeros():
    state = _state(SMOOTH)
    store, invert = _grads(SMOOTH, "store", state), _grads(SMOOTH, "invert", state)
    assert float((store - invert).norm() / store.norm()) < 1e-10
    assert _kinks(SMOOTH, state) == []


@pytest.mark.parametrize("tie", [True, False])
def test_max_pool_ties(tie: bool):
    model = odedsl.compile(
        "network p() { input image[1, 4, 4] stage s = ode(1) { integrator euler "
        "residual { maxpool(2, stride=1, padding=1) conv2d(1, kernel=2) } } }"
    )
    x = torch.arange(16.0).reshape(1, 1, 4, 4)  # distinct values: no window ties
    if tie:
        x[0, 0, 2, 2] = x[0, 0, 2, 3]
    found = ill_posed_points(model, lambda: model(x))
    assert found == (["s.f.0.maxpool1"] if tie else [])


# found by the differential fuzz test: the padded zero channel stays constant through the
# midpoint stage, whose batch norms divide it by sqrt(eps); the bias gradient of that channel
# is -2^-19 in store and +2^-19 in invert (its true value is 0)
PADDED = """network net() {
    input image[1, 3, 3]
    stem { pad_channels(2) }
    stage s0 = ode(3) { integrator midpoint residual f = { batchnorm2d tanh tanh batchnorm2d } }
}"""


def test_a_normalised_constant_channel_is_found():
    torch.manual_seed(0)
    model = odedsl.compile(PADDED, dtype=torch.float64)
    x = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    found = ill_posed_points(model, lambda: model(x))
    assert sorted(found) == [f"s0.f.{n}.bn{j}" for n in range(3) for j in (1, 2)]
    model.eval()  # running statistics: an affine map, nothing degenerate
    assert ill_posed_points(model, lambda: model(x)) == []


@pytest.mark.parametrize("norm", ["groupnorm(2)", "layernorm"])
def test_group_and_layer_norm_of_a_constant_group(norm: str):
    text = (
        "network n() { input vector[4] stage s = ode(2) { integrator euler "
        f"residual {{ {norm} linear(4) }} }} }}"
    )
    torch.manual_seed(0)
    model = odedsl.compile(text, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    assert ill_posed_points(model, lambda: model(x)) == []
    constant_rows = torch.full((3, 4), 0.5, dtype=torch.float64)  # every group degenerate
    name = "s.f.0.ln1" if norm == "layernorm" else "s.f.0.gn1"
    assert ill_posed_points(model, lambda: model(constant_rows)) == [name]


# found by the fuzz test at scale (stop 19): a zero-initialised stem batch norm makes the
# stage input exactly 0, and every group norm and batch norm of the residual divides a
# constant group by sqrt(eps), ~316x each: 3 layers x 2 evaluations x 3 norms overflow float32
# in plain autograd, so the gradient is inf/NaN with no odedsl machinery involved
CONSTANT_STAGE = """
integrator rk2(x) {
    k1 = f(x, t)
    k2 = f(x + 0.5*h*k1, t + 0.5*h)
    x += h*(0.5*k1 + 0.5*k2)
}
network net() {
    input image[1, 3, 3]
    stem { pad_channels(2) batchnorm2d(init=zeros) }
    stage s0 = ode(3) { integrator rk2 residual f = { groupnorm(1) groupnorm(1) batchnorm2d } }
    head { flatten linear(1) }
}"""


def test_chained_normalisations_of_a_constant_group_overflow_in_plain_autograd():
    torch.manual_seed(0)
    model = odedsl.compile(CONSTANT_STAGE, backward="store")
    x = torch.randn(2, 1, 3, 3, requires_grad=True)
    model(x).square().mean().backward()
    assert not torch.isfinite(x.grad).all()
    found = ill_posed_points(model, lambda: model(x.detach()), norms_only=True)
    assert found == [f"s0.f.{n}.{m}" for n in range(3) for m in ("gn1", "gn2", "bn1")]
    assert ill_posed_points(model, lambda: model(torch.zeros(2, 1, 3, 3)), norms_only=True)
    model.stem.bn1.weight.data.fill_(1.0)  # a stem that passes the input on: nothing degenerate
    assert ill_posed_points(model, lambda: model(x.detach()), norms_only=True) == []
