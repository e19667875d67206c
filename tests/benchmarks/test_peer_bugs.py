"""Bugs found in the memory-free peers while benchmarking them, each with odedsl beside it.

Every test reproduces a peer's wrong behaviour *as it is* (so it passes while the bug is
there, and fails, asking for the benchmark notes to be updated, once a release fixes it) and
checks that odedsl gets the same case right. A test is skipped only when its peer is not
installed (``pip install --no-deps momentumnet memcnn``; see ``benchmarks/README.md``).

Found with momentumnet 0.10, memcnn 1.5.2 and torch 2.13:

* memcnn ``InvertibleModuleWrapper`` (1) returns twice the gradient of a leaf input: its
  backward both sets ``input.grad`` by hand and returns the gradient, which autograd then
  accumulates into the same ``.grad``; (2) with the default ``keep_input=False`` frees the
  storage of the caller's input tensor after the forward (``storage().resize_(0)``), even
  when the caller still owns it; (3) updates BatchNorm running statistics three times per
  training step (forward, inverse, recomputation).
* momentumnet ``MomentumNet(use_backprop=False)``: (1) its exact fixed-point velocity
  (``TorchExactRep``) is not exact for negative values — it pairs a floor remainder
  (``%``) with a truncating division (``torch.div(..., rounding_mode="trunc")``, a port of
  Python's ``//=``); the lost units are then amplified by 1/γ per layer on the way back, and
  its int64 remainder store overflows after a few hundred layers; at depth 256 (γ = 0.9) the
  gradient is wrong by more than 100 %; (2) the velocity is read back in float32
  (``intrep.float()``) whatever the network's dtype; (3) BatchNorm statistics are updated
  twice per step (forward and recomputation).
* ``torch.utils.checkpoint`` also updates BatchNorm statistics twice per step.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from benchmarks.peers import Bank, odedsl_stage


def _mlp(width: int, hidden: int = 16, *, bn: bool = False, bounded: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(width, hidden)]
    if bn:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.Tanh() if bounded else nn.ReLU(), nn.Linear(hidden, width)]
    if bounded:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _rel(a: list[Tensor], b: list[Tensor]) -> float:
    num = sum(float((u - v).pow(2).sum()) for u, v in zip(a, b, strict=True))
    return (num / sum(float(v.pow(2).sum()) for v in b)) ** 0.5


@pytest.fixture(autouse=True)
def _quiet_peers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # memcnn: torch.cuda.amp deprecations, .grad of non-leaf
        yield


# ----------------------------------------------------------------------------- memcnn
def _memcnn_block(memcnn, f: nn.Module, g: nn.Module, keep_input: bool = False) -> nn.Module:
    coupling = memcnn.AdditiveCoupling(copy.deepcopy(f), copy.deepcopy(g), split_dim=1)
    return memcnn.InvertibleModuleWrapper(coupling, keep_input=keep_input)


def _plain_coupling(f: nn.Module, g: nn.Module, x: Tensor) -> Tensor:
    x1, x2 = torch.chunk(x, 2, dim=1)
    y1 = x1 + f(x2)
    return torch.cat([y1, x2 + g(y1)], dim=1)


@pytest.mark.parametrize("keep_input", [False, True])
def test_memcnn_doubles_the_gradient_of_a_leaf_input(keep_input: bool) -> None:
    memcnn = pytest.importorskip("memcnn")
    torch.manual_seed(0)
    f, g = _mlp(4).double(), _mlp(4).double()
    x = torch.randn(5, 8, dtype=torch.float64)

    ref = x.clone().requires_grad_()
    _plain_coupling(copy.deepcopy(f), copy.deepcopy(g), ref).sum().backward()

    leaf = x.clone().requires_grad_()
    _memcnn_block(memcnn, f, g, keep_input)(leaf).sum().backward()
    assert torch.allclose(leaf.grad, 2 * ref.grad)  # the bug: twice the true gradient

    non_leaf = x.clone().requires_grad_()
    _memcnn_block(memcnn, f, g, keep_input)(non_leaf * 1.0).sum().backward()
    assert torch.allclose(non_leaf.grad, ref.grad)  # correct once the input is not a leaf

    stage = odedsl_stage("additive_coupling", 1, Bank([f], [g]), "invert", "tied", 0.9)
    ours = x.clone().requires_grad_()
    stage(ours).sum().backward()
    assert torch.allclose(ours.grad, ref.grad)


def test_memcnn_frees_the_callers_input() -> None:
    memcnn = pytest.importorskip("memcnn")
    torch.manual_seed(0)
    f, g = _mlp(4), _mlp(4)
    x = torch.randn(5, 8, requires_grad=True)
    y = _memcnn_block(memcnn, f, g)(x)
    assert x.untyped_storage().nbytes() == 0  # the caller's tensor has lost its data
    y.sum().backward()
    assert x.untyped_storage().nbytes() == x.numel() * 4  # given back (reconstructed) later

    stage = odedsl_stage("additive_coupling", 1, Bank([f], [g]), "invert", "tied", 0.9)
    kept = x.detach().clone().requires_grad_()
    before = kept.detach().clone()
    stage(kept)
    assert torch.equal(kept.detach(), before)


# ----------------------------------------------------------------------------- BatchNorm
def _steps_counted(module: nn.Module) -> list[int]:
    return [int(m.num_batches_tracked) for m in module.modules() if isinstance(m, nn.BatchNorm1d)]


def test_batchnorm_statistics_are_updated_once_per_step_only_by_odedsl() -> None:
    torch.manual_seed(0)
    f, g = _mlp(4, bn=True), _mlp(4, bn=True)
    x = torch.randn(6, 8)

    for mode in ("invert", ("checkpoint", 1)):
        stage = odedsl_stage(
            "additive_coupling", 3, Bank([f, f, f], [g, g, g]), "store", "untied", 0.9
        )
        stage.backward_mode = mode  # type: ignore[assignment]
        stage(x.clone().requires_grad_()).sum().backward()
        assert set(_steps_counted(stage)) == {1}, mode

    fm = _mlp(8, bn=True)
    checkpoint(fm, x.clone().requires_grad_(), use_reentrant=False).sum().backward()
    assert _steps_counted(fm) == [2]  # torch.utils.checkpoint: forward + recomputation

    memcnn = pytest.importorskip("memcnn")
    block = _memcnn_block(memcnn, f, g)
    block(x.clone().requires_grad_() * 1.0).sum().backward()
    assert _steps_counted(block) == [3, 3]  # forward, inverse, recomputation

    momentumnet = pytest.importorskip("momentumnet")
    fm = _mlp(8, bn=True)
    net = momentumnet.MomentumNet([fm], gamma=0.9, use_backprop=False)
    net(x.clone().requires_grad_() * 1.0).sum().backward()
    assert _steps_counted(fm) == [2]  # forward + recomputation


# ----------------------------------------------------------------------------- momentumnet
def test_momentumnet_exact_representation_is_not_exact_for_negative_values() -> None:
    pytest.importorskip("momentumnet")
    from momentumnet.exact_rep_pytorch import TorchExactRep

    def round_trip(v0: Tensor, adds: list[Tensor]) -> bool:
        v = TorchExactRep(v0.clone())
        start = v.intrep.clone()
        for a in adds:
            v *= 0.9
            v += a
        for a in reversed(adds):
            v += -a
            v /= 0.9
        return bool(torch.equal(v.intrep, start))

    gen = torch.Generator().manual_seed(0)
    positive = [0.1 * torch.rand(100, generator=gen, dtype=torch.float64) for _ in range(10)]
    signed = [0.1 * torch.randn(100, generator=gen, dtype=torch.float64) for _ in range(10)]
    v0 = torch.rand(100, generator=gen, dtype=torch.float64)
    assert round_trip(v0, positive)  # exact while every value stays non-negative
    assert not round_trip(v0 - 0.5, signed)  # not exact once values are negative
    assert TorchExactRep(v0).val.dtype == torch.float32  # float64 in, float32 out


def test_momentumnet_memory_free_gradient_is_wrong_at_depth() -> None:
    momentumnet = pytest.importorskip("momentumnet")
    depth, gamma = 256, 0.9
    torch.manual_seed(0)
    fs = [_mlp(8, bounded=True).double() for _ in range(depth)]  # |f| < 1: nothing overflows
    x = torch.randn(16, 8, dtype=torch.float64)

    def grads(net: nn.Module, forward=None) -> list[Tensor]:
        xx = x.clone().requires_grad_()
        (forward or net)(xx).sum().backward()
        return [p.grad for p in net.parameters()] + [xx.grad]

    ref = grads(momentumnet.MomentumNet(copy.deepcopy(fs), gamma=gamma, use_backprop=True))
    peer = grads(momentumnet.MomentumNet(copy.deepcopy(fs), gamma=gamma, use_backprop=False))
    assert _rel(peer, ref) > 0.5  # the bug: more than 50 % off (about 180 % here)

    stage = odedsl_stage("momentum", depth, Bank(copy.deepcopy(fs), []), "invert", "untied", gamma)
    ours = grads(stage)
    assert _rel(ours, ref) < 1e-6
