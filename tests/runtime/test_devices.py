"""What a GPU run does differently, checked on CPU (no GPU is needed by the suite).

From a static review for CUDA on 2026-12-02: tensors the runtime made on the *default* device
(``torch.set_default_device("cuda")`` is a common set-up) instead of the state's, and sums and
counts made in a 16-bit dtype. The default device is set to ``meta`` here, so any tensor the
runtime makes without naming a device is a meta tensor and the step fails (it did, in invert:
the drift sketch's norms went to the default device, and so would its projections and a
stochastic stage's seed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import odedsl
import odedsl.parallel as parallel
from odedsl.runtime.guard import FiniteProbe
from odedsl.runtime.replay import seeded

DROPOUT = """\
network drop(depth: int = 4) {
    input vector[6]
    stage s = ode(depth) {
        integrator additive_coupling
        residual { linear(3) tanh dropout(0.3) }
    }
    head { linear(2) }
}
"""
SOURCES = ["specs/hamiltonian.ode", "specs/momentum.ode", "specs/heunnet.ode", DROPOUT]


def _grads(source: str, backward: str, default_device: str | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = odedsl.compile(source, backward=backward, depth=4)
    x = torch.randn(3, *model.input_shape)
    torch.manual_seed(1)
    if default_device is None:
        model(x).square().sum().backward()
    else:
        with torch.device(default_device):
            model(x).square().sum().backward()
    return {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.parametrize("backward", ["store", "checkpoint(2)", "invert"])
@pytest.mark.parametrize("source", SOURCES, ids=["hamiltonian", "momentum", "heun", "dropout"])
def test_another_default_device_changes_nothing(source: str, backward: str) -> None:
    want = _grads(source, backward, None)
    got = _grads(source, backward, "meta")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_seeded_on_the_meta_device_has_no_stream() -> None:
    with seeded(torch.device("meta"), 3):
        assert torch.empty(2, device="meta").is_meta


def test_a_large_finite_float16_state_is_finite_to_the_probe() -> None:
    """Summed in float16, 131,072 halves overflow to inf, and a false alarm ran the
    non-finite locator's extra reconstruction walk on every backward."""
    probe = FiniteProbe()
    probe.add([torch.full((131_072,), 0.5, dtype=torch.float16)])
    assert probe.finite()
    probe.add([torch.tensor([float("nan")], dtype=torch.float16)])
    assert not probe.finite()


def test_sync_batchnorm_counts_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float16 batch of 96×28×28 positions per channel: the count (75,264) was made in the
    input's dtype, inf in float16, and every output NaN."""
    monkeypatch.setattr(parallel.SyncBatchNorm, "_synchronised", lambda self: True)
    monkeypatch.setattr(parallel.dist, "all_reduce", lambda tensor, group=None: None)
    monkeypatch.setattr(parallel.dist, "group", type("G", (), {"WORLD": None}))
    bn = parallel.SyncBatchNorm(4).train()
    x = torch.randn(96, 4, 28, 28).to(torch.float16)
    out = bn(x)
    want = F.batch_norm(x.float(), None, None, training=True, eps=bn.eps)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), want, atol=2e-3, rtol=2e-3)
    assert int(bn.num_batches_tracked) == 1 and torch.isfinite(bn.running_var).all()


def test_sync_batchnorm_sums_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-channel sums of a float16 batch with mean 2 over 75,264 positions (~150,000)
    pass float16's 65,504: summed in the input's dtype they were inf, and the outputs NaN."""
    monkeypatch.setattr(parallel.SyncBatchNorm, "_synchronised", lambda self: True)
    monkeypatch.setattr(parallel.dist, "all_reduce", lambda tensor, group=None: None)
    monkeypatch.setattr(parallel.dist, "group", type("G", (), {"WORLD": None}))
    bn = parallel.SyncBatchNorm(2).train()
    x = (torch.randn(96, 2, 28, 28) + 2).to(torch.float16)
    out = bn(x)
    want = F.batch_norm(x.float(), None, None, training=True, eps=bn.eps)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), want, atol=2e-3, rtol=2e-3)
    want_mean = bn.momentum * x.float().mean((0, 2, 3))
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-3, atol=0)


def test_the_first_drift_sketch_under_another_default_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sketch's projections are cached per size: with the cache empty they are drawn
    under the default device (``meta`` here) too, and must come from the CPU generator."""
    from odedsl.runtime import sketch

    monkeypatch.setattr(sketch, "_CACHE", {})
    got = _grads("specs/hamiltonian.ode", "invert", "meta")
    monkeypatch.setattr(sketch, "_CACHE", {})
    want = _grads("specs/hamiltonian.ode", "invert", None)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


#: The shipped networks (blocks.ode is a library of blocks, no network).
SPECS = Path(__file__).resolve().parents[2] / "specs"
SHIPPED = sorted(p.name for p in SPECS.glob("*.ode") if p.name != "blocks.ode")


@pytest.mark.parametrize("spec", SHIPPED)
def test_a_model_built_on_the_meta_device_materialises_and_runs(spec: str) -> None:
    """Building under ``torch.device("meta")`` and materialising later (FSDP's large-model
    start) failed in the coefficient dry run, whose float64 probe tensors went to the meta
    device (torch.nonzero has no meta kernel): every shipped spec raised."""
    torch.manual_seed(0)
    want = odedsl.compile(SPECS / spec, depth=2)
    with torch.device("meta"):
        model = odedsl.compile(SPECS / spec, depth=2)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu").load_state_dict(want.state_dict())
    x = torch.randn(2, *model.input_shape)
    assert torch.equal(model.eval()(x), want.eval()(x))
