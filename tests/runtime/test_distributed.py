"""DistributedDataParallel sees every parameter gradient a custom backward produces."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .util import MODES, make_stage, max_param_error, run


@pytest.fixture
def process_group(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    init = f"file://{tmp_path / 'init'}"
    dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("mode", MODES[1:], ids=str)
def test_ddp_single_process(process_group, mode):
    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 8)
    x = torch.randn(6, 8, dtype=torch.float64)
    store = run(stage, x, "store")
    stage.backward_mode = mode
    ddp = run(DistributedDataParallel(copy.deepcopy(stage)), x, copy_module=False)
    ddp.grads = {k.removeprefix("module."): g for k, g in ddp.grads.items()}
    assert max_param_error(ddp, store) < 1e-10


class _NormedMLP(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.bn = torch.nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc(x)))


@pytest.mark.parametrize("convert", ["torch", "odedsl"])
def test_sync_norms_found_once_per_tree(process_group, convert):
    """Invert agrees its decisions over the SyncBatchNorms' group; the tables find them once,
    and again after a conversion replaces the BatchNorms (the tree changed)."""
    from odedsl.parallel import convert_sync_batchnorm
    from odedsl.runtime.invert import _collective_group

    stage = make_stage("hamiltonian", 4, residual=_NormedMLP)
    assert stage.tables().sync_norms == []
    before = stage.tables()
    if convert == "torch":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(stage)
    else:
        convert_sync_batchnorm(stage)
    tables = stage.tables()
    assert tables is not before
    norms = [m for m in stage.modules() if type(m).__name__ == "SyncBatchNorm"]
    assert len(norms) == 8 and tables.sync_norms == norms
    assert _collective_group(tables) is None  # one process: nothing to agree with
