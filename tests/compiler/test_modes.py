"""Every standard integrator through the whole pipeline (spec text → compile): the three
backward modes agree with store, exactly for exact kinds, and BatchNorm statistics move once."""

from __future__ import annotations

import pytest
import torch

import odedsl
from odedsl.integrators import standard_library

SPEC = """\
network net(depth: int = 12) {{
    input image[4, 5, 5]
    stage body = ode(depth) {{
        integrator {integrator}
        weights {weights}
        residual {{ conv2d({width}, kernel=3, padding=1) batchnorm2d tanh }}
    }}
    head {{ flatten linear(3) }}
}}
"""

INTEGRATORS = sorted(standard_library())
SPLIT = {name for name, integ in standard_library().items() if integ.split_channels}


def compiled(integrator: str, backward: str, weights: str = "untied", depth: int = 12):
    width = 2 if integrator in SPLIT else 4
    text = SPEC.format(integrator=integrator, weights=weights, width=width)
    return odedsl.compile(text, backward=backward, dtype=torch.float64, depth=depth)


def grads_of(model, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    (model(x) ** 2).sum().backward()
    return [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]


def relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((u - v).norm() ** 2) for u, v in zip(a, b, strict=True)) ** 0.5
    den = sum(float(v.norm() ** 2) for v in b) ** 0.5
    return num / den


@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_modes_agree_with_store(integrator: str) -> None:
    torch.manual_seed(0)
    store = compiled(integrator, "store")
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    reference = grads_of(store, x)
    kind = store.body.kind
    for backward in ("checkpoint(5)", "invert"):
        model = compiled(integrator, backward)
        model.load_state_dict(store.state_dict())
        torch.testing.assert_close(model(x), store(x), rtol=1e-12, atol=1e-12)
        error = relative(grads_of(model, x), reference)
        if backward.startswith("checkpoint") or kind == "exact":
            assert error < 1e-10, (backward, kind, error)
        elif kind == "exact-unstable":
            assert error < 1e-6, (backward, kind, error)
        else:  # approximate: the reverse-time scheme's O(1/N) (Euler) or smaller error
            assert 1e-12 < error < 0.2, (backward, kind, error)


@pytest.mark.parametrize("backward", ["store", "checkpoint(3)", "invert"])
def test_batchnorm_statistics_move_exactly_once(backward: str) -> None:
    torch.manual_seed(1)
    reference = compiled("hamiltonian", "store", weights="tied")
    model = compiled("hamiltonian", backward, weights="tied")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    grads_of(reference, x)
    grads_of(model, x)
    for (name, a), (_, b) in zip(reference.named_buffers(), model.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    tracked = [b for n, b in model.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and all(int(t) == 12 for t in tracked)  # tied f and g: one update per layer
