"""torch.compile of a module containing a stage, in every mode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from odedsl.runtime import OdeStage, WeightSchedule

from .util import MODES, make_stage, max_param_error, run


def network(mode: object, program: str = "hamiltonian") -> nn.Module:
    torch.manual_seed(0)
    stage = make_stage(program, 4, schedule=WeightSchedule("untied"), backward=mode)
    return nn.Sequential(nn.Linear(6, 8), stage, nn.Tanh(), nn.Linear(8, 2)).double()


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_compile_aot_eager(mode):
    torch._dynamo.reset()
    net = network(mode)
    x = torch.randn(10, 6, dtype=torch.float64)
    eager = run(net, x)
    compiled_net = copy.deepcopy(net)
    compiled = run(torch.compile(compiled_net, backend="aot_eager"), x, copy_module=False)
    torch.testing.assert_close(compiled.out, eager.out, rtol=1e-12, atol=1e-12)
    assert max_param_error(compiled, eager) < 1e-10
    stage: OdeStage = compiled_net[1]  # type: ignore[assignment]
    assert str(stage.backward_mode) == str(network(mode)[1].backward_mode)  # no silent change
    for key, buf in compiled_net.named_buffers():  # statistics updated once
        torch.testing.assert_close(buf, dict(eager.module.named_buffers())[key])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_compile_inductor(mode):
    torch._dynamo.reset()
    net = network(mode, "midpoint")
    x = torch.randn(10, 6, dtype=torch.float64)
    eager = run(net, x)
    compiled = run(torch.compile(copy.deepcopy(net)), x, copy_module=False)
    torch.testing.assert_close(compiled.out, eager.out, rtol=1e-10, atol=1e-10)
    assert max_param_error(compiled, eager) < 1e-8
