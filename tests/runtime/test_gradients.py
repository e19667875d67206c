"""Gradients of checkpoint and invert against plain autograd (store)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from odedsl.runtime import InversionDriftWarning, Invert, WeightSchedule, activation_bytes
from odedsl.runtime.sketch import sketch_bytes

from .programs import EXACT, MLP, PROGRAMS
from .util import Run, grad_error, make_stage, max_param_error, run

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("program", EXACT)
def test_exact_invert_matches_store_at_depth_64(program, dtype):
    torch.manual_seed(hash(program) % 1000)
    stage = make_stage(program, 64, dtype=dtype)
    x = torch.randn(16, 8, dtype=dtype)
    store, inv = run(stage, x, "store"), run(stage, x, "invert")
    assert store.input_grad is not None and store.input_grad.norm() > 0
    assert max_param_error(inv, store) <= TOL[dtype]


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_checkpoint_matches_store(program):
    torch.manual_seed(3)
    stage = make_stage(program, 10)
    x = torch.randn(8, 8, dtype=torch.float64)
    store = run(stage, x, "store")
    for k in (1, 3, 10):
        assert max_param_error(run(stage, x, ("checkpoint", k)), store) <= 1e-12


def test_anchor_plan():
    inv = Invert()
    f32 = inv.plan(PROGRAMS["momentum"](0.9), 1000, torch.float32)
    expected = math.floor(math.log(1e-5 / torch.finfo(torch.float32).eps) / math.log(1 / 0.9))
    assert f32.every == expected == 42 and f32.count == 999 // 42
    assert inv.plan(PROGRAMS["momentum"](0.9), 64, torch.float64).every is None  # 123 > 64
    assert inv.plan(PROGRAMS["momentum"](0.5), 64, torch.float64) == (18, 3)
    assert inv.plan(PROGRAMS["hamiltonian"](), 1000, torch.float32) == (None, 0)
    stage = make_stage("momentum", 1000, backward="invert")
    assert stage.anchor_plan(torch.float32) == f32 and stage.anchor_plan(torch.float64).count == 8
    stage.backward_mode = "store"
    assert stage.anchor_plan(torch.float32) == (None, 0)


def test_reanchoring_keeps_unstable_inversion_accurate():
    """γ = 1/2 doubles rounding errors per layer: 2^64 ε is garbage, 2^32 ε is not."""
    torch.manual_seed(5)
    prog = PROGRAMS["momentum"]
    stage = make_stage("momentum", 64)
    stage.program = prog(0.5)
    x = torch.randn(16, 8, dtype=torch.float64)
    store = run(stage, x, "store")
    anchored = run(stage, x, Invert())
    with pytest.warns(InversionDriftWarning):  # garbage, and said so
        unanchored = run(stage, x, Invert(anchor_tol=1e300))
    assert grad_error(anchored, store) < 1e-6
    assert grad_error(unanchored, store) > 1e-2
    # each anchor (planned, or measured by the first call) costs one state (x and v)
    stage.backward_mode = Invert()
    with_anchors = activation_bytes(stage, x.requires_grad_())
    count = stage.anchor_plan(torch.float64).count
    assert count >= Invert().plan(stage.program, 64, torch.float64).count == 3
    stage.backward_mode = Invert(anchor_tol=1e300)
    assert with_anchors - activation_bytes(stage, x) == count * 2 * x.numel() * x.element_size()


@pytest.mark.parametrize("program", ["euler", "heun"])
def test_approximate_invert_is_close_but_not_exact(program):
    torch.manual_seed(2)
    stage = make_stage(program, 32, schedule=WeightSchedule("tied"))
    x = torch.randn(16, 8, dtype=torch.float64)
    err = grad_error(run(stage, x, "invert"), run(stage, x, "store"))
    assert 1e-8 < err < 0.05


def _euler_heun_errors(depths: list[int], schedule: WeightSchedule) -> dict[str, list[float]]:
    errors: dict[str, list[float]] = {"euler": [], "heun": []}
    x = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for program in errors:
        for depth in depths:
            torch.manual_seed(11)  # the same residual weights at every depth
            stage = make_stage(program, depth, schedule=schedule)
            store, inv = run(stage, x, "store"), run(stage, x, "invert")
            errors[program].append(grad_error(inv, store))
    return errors


def _slope(depths: list[int], errors: list[float]) -> float:
    lx = torch.tensor(depths, dtype=torch.float64).log()
    ly = torch.tensor(errors, dtype=torch.float64).log()
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


@pytest.mark.parametrize(
    "schedule", [WeightSchedule("tied"), WeightSchedule("interpolated", 3)], ids=str
)
def test_approximate_gradient_error_converges_with_depth(schedule):
    """Seed 000 Prop. 4: reverse-Euler gradients are O(1/N); Heun does better."""
    depths = [8, 16, 32, 64, 128]
    errors = _euler_heun_errors(depths, schedule)
    slope = _slope(depths, errors["euler"])
    assert -1.4 < slope < -0.6, (slope, errors)
    assert all(h < e for h, e in zip(errors["heun"], errors["euler"], strict=True)), errors
    assert _slope(depths, errors["heun"]) < slope


def test_anchor_every_for_any_kind():
    """``Invert(anchor_every=k)`` keeps the state every k layers whatever the inverse kind."""
    prog = PROGRAMS["midpoint"]()
    assert Invert(anchor_every=8).plan(prog, 64, torch.float32) == (8, 7)
    assert Invert(anchor_every=64).plan(prog, 64, torch.float32) == (None, 0)
    assert Invert(anchor_every=8).plan(PROGRAMS["momentum"](0.5), 64, torch.float64) == (8, 7)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="anchor_every"):
            Invert(anchor_every=bad)  # type: ignore[arg-type]
    assert str(Invert(anchor_every=8)) == "invert(anchor_every=8)" and str(Invert()) == "invert"


@pytest.mark.parametrize("program", ["midpoint", "hamiltonian", "euler"])
def test_anchor_every_gradients_and_memory(program):
    torch.manual_seed(2)
    stage = make_stage(program, 24)
    x = torch.randn(8, 8, dtype=torch.float64)
    store, plain = run(stage, x, "store"), run(stage, x, Invert())
    anchored = run(stage, x, Invert(anchor_every=5))
    if program == "euler":  # approximate: anchors cut the drift, gradients get closer
        assert grad_error(anchored, store) < grad_error(plain, store)
    else:
        assert max_param_error(anchored, store) <= 1e-10
    stage.backward_mode = Invert()
    base = activation_bytes(stage, x.requires_grad_())
    init = stage.program.init_state(x)
    state = sum(s.numel() * s.element_size() for s in init)
    sketched = sketch_bytes(init) if stage.kind != "approximate" else 0  # exact: input sketch
    assert base == state + sketched
    stage.backward_mode = Invert(anchor_every=5)
    assert activation_bytes(stage, x) == base + (23 // 5) * state


def test_anchor_growth_counts_only_dividing_updates():
    """A step with factors 1/2 and 4 still doubles v's rounding each layer: the factor 4 of
    another variable must not cancel it (growth is per update, at least 1)."""
    from dataclasses import replace

    from odedsl.runtime.program import AffineUpdate

    prog = PROGRAMS["momentum"](0.5)
    first, second = prog.step.updates
    mixed = (first, AffineUpdate(second.target, 4.0, second.increment))
    prog = replace(prog, step=replace(prog.step, updates=mixed))
    assert Invert().plan(prog, 1000, torch.float64).every == 18  # 2^18 ε ≤ 1e-10 < 2^19 ε


def test_double_backward_is_refused_by_invert_and_exact_in_the_other_modes():
    """A gradient penalty differentiates the gradients: store and checkpoint(k) do it alike;
    invert's backward is not differentiable and says so when asked (create_graph=True),
    where it had returned gradients that a second backward treated as constants."""
    results = {}
    for mode in ("store", ("checkpoint", 2), "invert"):
        torch.manual_seed(2)
        stage = make_stage("hamiltonian", 6, backward=mode)
        x = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        if mode == "invert":
            with pytest.raises(RuntimeError, match=r"not differentiable.*store or checkpoint"):
                torch.autograd.grad(stage(x).square().sum(), x, create_graph=True)
            continue
        (g,) = torch.autograd.grad(stage(x).square().sum(), x, create_graph=True)
        g.square().sum().backward()
        results[str(mode)] = x.grad
    store, ckpt = results.values()
    torch.testing.assert_close(ckpt, store, rtol=1e-12, atol=1e-12)


def _gradient_penalty(
    program: str,
    schedule: str,
    mode: object,
    residual: Callable[[int], nn.Module],
    stochastic: bool,
) -> Run:
    """A depth-4 stage: ∂/∂(θ, x) of ‖∂L/∂x‖² (a gradient penalty), float64."""
    torch.manual_seed(2)
    stage = make_stage(
        program,
        4,
        schedule=WeightSchedule(schedule),
        backward=mode,
        residual=residual,
        stochastic=stochastic,
    )
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_()
    torch.manual_seed(5)
    (g,) = torch.autograd.grad(stage(x).square().sum(), x, create_graph=True)
    g.square().sum().backward()
    grads = {k: p.grad for k, p in stage.named_parameters()}
    return Run(g.detach(), x.grad, grads, stage)


def _assert_penalty_as_store(
    program: str, schedule: str, residual: Callable[[int], nn.Module], stochastic: bool
) -> None:
    store = _gradient_penalty(program, schedule, "store", residual, stochastic)
    ckpt = _gradient_penalty(program, schedule, ("checkpoint", 2), residual, stochastic)
    torch.testing.assert_close(ckpt.out, store.out, rtol=1e-12, atol=1e-12)
    assert max_param_error(ckpt, store) <= 1e-10
    buffers = dict(store.module.named_buffers())
    assert buffers["f.0.bn.num_batches_tracked"] >= 1
    for key, value in ckpt.module.named_buffers():
        assert torch.equal(value, buffers[key]), key  # the statistics moved once


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["plain", "dropout"])
@pytest.mark.parametrize(("program", "schedule"), [("heun", "untied"), ("euler", "tied")])
def test_double_backward_through_checkpoint_with_a_batchnorm_slot_in_two_segments(
    program: str, schedule: str, dropout: float
) -> None:
    """A BatchNorm slot recomputed in two checkpoint segments (Heun's θ_{n+1} reads the next
    segment's first slot; tied weights are every segment's) had each recomputation's buffer
    restore bump the running statistics' version counter, which BatchNorm's double-backward
    nodes save: autograd's in-place error in the second backward. Now store's values."""
    _assert_penalty_as_store(program, schedule, lambda w: MLP(w, dropout=dropout), dropout > 0)


class _NormedMLP(nn.Module):
    """Spectral-normalised Linear → BatchNorm → tanh: a slot whose buffers are replayed."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = parametrizations.spectral_norm(nn.Linear(width, width))
        self.bn = nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.lin(x)))


def test_double_backward_through_checkpoint_with_replayed_batchnorm_buffers() -> None:
    """A slot with spectral normalisation has all its buffers, BatchNorm's statistics too,
    written back before each recomputed call: that write had bumped their version counters
    as the restore did (the same in-place error)."""
    _assert_penalty_as_store("heun", "untied", _NormedMLP, False)
