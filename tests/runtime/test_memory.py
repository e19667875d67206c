"""Activation memory: flat in depth for invert, linear for store, N/k states for checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odedsl.runtime import WeightSchedule, activation_bytes, cuda_activation_bytes
from odedsl.runtime.sketch import PROJECTIONS

from .programs import MLP
from .util import make_stage


def stage_bytes(program: str, depth: int, mode: object, width: int = 4) -> int:
    stage = make_stage(
        program,
        depth,
        width=width,
        schedule=WeightSchedule("tied"),
        backward=mode,
        dtype=torch.float32,
        residual=lambda w: MLP(w, hidden=4),
    )
    return activation_bytes(stage, torch.randn(8, width, requires_grad=True))


@pytest.mark.parametrize("program", ["euler", "hamiltonian", "midpoint"])
def test_invert_is_flat_in_depth(program):
    shallow, deep = stage_bytes(program, 10, "invert"), stage_bytes(program, 1000, "invert")
    assert deep == shallow
    state = 8 * 4 * 4  # batch 8, width 4, float32
    # the final state (two for midpoint's (prev, x)) and, for exact inverses, a sketch of the
    # input: PROJECTIONS + 1 float64 numbers, whatever the batch
    states = 2 if program == "midpoint" else 1
    sketch = 0 if program == "euler" else (PROJECTIONS + 1) * 8
    assert shallow == states * state + sketch


def test_store_is_linear_in_depth():
    b10, b20, b40 = (stage_bytes("euler", n, "store") for n in (10, 20, 40))
    assert (b40 - b20) == pytest.approx(2 * (b20 - b10), rel=0.02)
    assert b40 > 3.5 * b10


def test_checkpoint_keeps_one_state_per_segment():
    state = 8 * 4 * 4
    assert stage_bytes("euler", 40, ("checkpoint", 10)) == 4 * state
    assert stage_bytes("euler", 40, ("checkpoint", 10)) < stage_bytes("euler", 40, "store") / 20


def test_parameters_are_excluded():
    lin = nn.Linear(64, 64)
    x = torch.randn(2, 64)
    assert activation_bytes(lin, x) == 2 * 64 * 4  # the input, for the weight's gradient
    lin.requires_grad_(False)
    x.requires_grad_()
    assert activation_bytes(lin, x) == 0  # only the (excluded) weight, for the input's
    assert activation_bytes(lambda t: torch.exp(lin(t)), x, params=lin.parameters()) == 512


def test_custom_function_saves_are_counted():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return t * t

        @staticmethod
        def backward(ctx, g):
            return 2 * ctx.saved_tensors[0] * g

    x = torch.randn(10, requires_grad=True)
    assert activation_bytes(Square.apply, x) == 40


def test_cuda_variant_refuses_without_cuda():
    if torch.cuda.is_available():
        stage = make_stage("euler", 100, backward="invert").cuda()
        assert cuda_activation_bytes(stage, torch.randn(8, 8, device="cuda", dtype=torch.float64))
        return
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda_activation_bytes(lambda: None)


@pytest.mark.parametrize("backward", ["invert", "checkpoint(4)"])
def test_memory_free_modes_hold_when_only_parameters_need_grad(backward):
    """A stage fed a data batch (no requires_grad, the usual first stage) still runs its mode:
    only its parameters need gradients, and it must not fall back to storing every layer."""

    def nbytes(depth: int) -> int:
        stage = make_stage(
            "hamiltonian",
            depth,
            width=4,
            backward=backward,
            dtype=torch.float32,
            schedule=WeightSchedule("tied"),
        )
        return activation_bytes(stage, torch.randn(8, 4))

    if backward == "invert":
        assert nbytes(10) == nbytes(200)
    else:
        assert nbytes(200) < 0.1 * _store_bytes(200)


def _store_bytes(depth: int) -> int:
    stage = make_stage(
        "hamiltonian",
        depth,
        width=4,
        backward="store",
        dtype=torch.float32,
        schedule=WeightSchedule("tied"),
    )
    return activation_bytes(stage, torch.randn(8, 4))


@pytest.mark.parametrize("backward", ["invert", "store", "checkpoint(2)"])
def test_an_empty_batch_runs_in_every_mode(backward):
    """A batch of 0 samples (the tail of a data set, a filtered batch): the drift sketch's
    reshape was ambiguous for it and invert raised."""
    stage = make_stage("hamiltonian", 4, backward=backward)
    x = torch.randn(0, 8, dtype=torch.float64, requires_grad=True)
    stage(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 8)
