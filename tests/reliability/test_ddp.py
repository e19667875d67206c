"""Multi-process training: DDP over ``torchrun --nproc_per_node=2`` (gloo, CPU) of compiled
``invert``-mode networks matches one process on the same global batch.

The reference is independent of DDP: the same model (``ddp_cases.build``) run by this process
on all 8 samples. Compared: the first gradients (1e-10 in float64), then parameters and
buffers (BatchNorm running statistics included) after three SGD steps.

``torch.nn.SyncBatchNorm`` cannot run here: on CPU it raises "SyncBatchNorm expected input
tensor to be on GPU" (checked below, so the test notices when torch lifts that). BatchNorm
inside invert-mode residuals is therefore synchronised with :mod:`odedsl.parallel`'s
``SyncBatchNorm`` (same ``convert_sync_batchnorm`` interface), and compared against plain
BatchNorm on the whole batch. With ``torch.nn.SyncBatchNorm`` only its conversion is tested
(keys, values and single-process behaviour), see ``test_torch_sync_batchnorm_conversion``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from odedsl.parallel import SyncBatchNorm, convert_sync_batchnorm

from .ddp_cases import CASES, STEPS, batch, build, loss_fn
from .torchrun import torchrun

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``torchrun`` of all cases (process start-up dominates the cost)."""
    return torchrun("ddp_worker.py", tmp_path_factory.mktemp("ddp") / "results.pt")


def reference(name: str) -> dict[str, dict[str, torch.Tensor]]:
    """One process, the whole batch, plain BatchNorm."""
    model = build(name, sync=False)
    x, y = batch(name)
    loss_fn(model(x), y).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return {"grads": grads, "state": dict(model.state_dict())}


@pytest.mark.parametrize("name", CASES)
def test_ddp_gradients_equal_single_process(ddp_results: dict[str, Any], name: str) -> None:
    assert ddp_results["world"] == 2
    got, want = ddp_results[name]["grads"], reference(name)["grads"]
    assert got.keys() == want.keys() and len(want) > 0
    for key, g in want.items():
        torch.testing.assert_close(got[key], g, rtol=1e-9, atol=1e-10, msg=key)


@pytest.mark.parametrize("name", CASES)
def test_ddp_training_equals_single_process(ddp_results: dict[str, Any], name: str) -> None:
    got, want = ddp_results[name]["state"], reference(name)["state"]
    assert got.keys() == want.keys()
    start = build(name, sync=False).state_dict()
    moved = [k for k in want if not torch.equal(want[k], start[k])]
    assert moved, "training changed nothing"
    if name == "syncbn":  # running statistics of the residuals' BatchNorm: once per forward
        assert any("running_mean" in k for k in moved)
        assert int(want["s1.f.0.bn1.num_batches_tracked"]) == 1 + STEPS
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-10, msg=key)


def test_ranks_agree_on_measured_anchors(ddp_results: dict[str, Any]) -> None:
    """Rank 0 measures a drift that needs anchors (its margin made infinite), rank 1 none (its
    target made huge), as different data could; agreed over the process group, both keep the
    denser plan and replay their forward, SyncBatchNorm's all-reduces included (without the
    agreement gloo aborts on mismatched collectives). At the second step only rank 0 loads
    its state dict, which makes it measure again: the decision to measure is agreed too."""
    plans = ddp_results["measured"]["plans"]
    assert plans[0] == plans[1] and plans[0][0][1] > 0, plans
    for name in ("tiny", "syncbn"):  # the others measured too, and agree
        assert ddp_results[name]["plans"][0] == ddp_results[name]["plans"][1]


def test_torch_sync_batchnorm_refuses_cpu(ddp_results: dict[str, Any]) -> None:
    """Why odedsl.parallel has its own: torch's needs GPU tensors (torch 2.x)."""
    assert ddp_results["torch_syncbn"].startswith("ValueError: SyncBatchNorm expected input")


def test_torch_sync_batchnorm_conversion() -> None:
    """What can be tested without a GPU: torch's conversion reaches the BatchNorm of every
    residual slot, keeps the state dict, and (no process group) trains like BatchNorm in
    invert mode."""
    plain = build("syncbn", sync=False)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
    _same_conversion(plain, converted, nn.SyncBatchNorm)


def test_odedsl_sync_batchnorm_conversion() -> None:
    plain = build("syncbn", sync=False)
    converted = convert_sync_batchnorm(copy.deepcopy(plain))
    _same_conversion(plain, converted, SyncBatchNorm)


def _same_conversion(plain: nn.Module, converted: nn.Module, cls: type) -> None:
    bns = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 2 * 3 + 3 and all(isinstance(m, cls) for m in bns)  # s1: f and g
    assert plain.state_dict().keys() == converted.state_dict().keys()
    x, y = batch("syncbn")
    for model in (plain, converted):
        loss_fn(model(x), y).backward()
    for (k, p), q in zip(plain.named_parameters(), converted.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=k)
    for (k, a), b in zip(plain.state_dict().items(), converted.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=k)
