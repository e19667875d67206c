"""A standalone generated module under torch.compile: its stages compile their residuals once
(the vendored runtime carries ``compile_steps``), outputs and gradients equal eager's."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from .helpers import SPECS, import_file, perturbed_state, write


@pytest.mark.parametrize("backward", ["store", "invert"])
def test_standalone_module_compiles_with_constant_graphs(tmp_path: Path, backward: str) -> None:
    files = write(SPECS / "hamiltonian.ode", tmp_path, standalone=True, depth=2, size=8)
    generated = import_file(files["hamiltonian.py"])
    torch.manual_seed(0)
    eager = generated.build(backward=backward).double()
    eager.load_state_dict(perturbed_state(eager))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)

    def grads(model: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = model(x)
        out.square().sum().backward()
        return out.detach(), [p.grad for p in model.parameters()]

    torch._dynamo.reset()
    compiled = generated.compile_steps(copy.deepcopy(eager), backend="aot_eager")
    out_c, g_c = grads(torch.compile(compiled, backend="aot_eager"))
    out_e, g_e = grads(eager)
    torch.testing.assert_close(out_c, out_e, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_c, g_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    stages = [m for m in compiled.modules() if hasattr(m, "step_compiler")]
    assert len(stages) == 3 and all(s.step_compiler._fns for s in stages)  # really compiled
