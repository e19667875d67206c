"""Sharded training: FSDP2 (``fully_shard``) and FSDP1 (``FullyShardedDataParallel``) over
``torchrun --nproc_per_node=2`` (gloo, CPU), every backward mode, against one process on the
whole batch (``fsdp_worker.py`` says what each configuration shards).

Sharding the model or each stage trains exactly as one process does (float64, 1e-10 after two
SGD steps), in every mode. Two configurations cannot work in the modes that re-run residuals
inside the stage's backward, and are refused before a step, naming the module and the way out
(they were silent or anonymous before 2026-12-02):

* a residual sharded on its own, in ``checkpoint`` (DTensor's mixed-tensor error) and
  ``invert`` (the residuals' gradients came back ``None``, so the optimizer skipped them);
* FSDP1 with ``use_orig_params=False``, its default, in ``invert``: it holds the weights as
  plain tensor views, which invert did not differentiate (the stage's 22 weights never moved).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from .fsdp_worker import CONFIGS, LR, MODES, STEPS, batch, build, loss_fn
from .torchrun import torchrun

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
#: configurations refused, by mode: (FSDP version, what is sharded, use_orig_params)
REFUSED = {
    "store": set(),
    "checkpoint(1)": {("fsdp2", "residuals", None), ("fsdp1", "residuals", True)},
    "invert": {
        ("fsdp2", "residuals", None),
        ("fsdp1", "residuals", True),
        ("fsdp1", "root", False),
    },
}


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``torchrun`` of every configuration (process start-up dominates the cost)."""
    return torchrun("fsdp_worker.py", tmp_path_factory.mktemp("fsdp") / "results.pt")


def reference(backward: str) -> dict[str, torch.Tensor]:
    """One process, the whole batch, no sharding."""
    model = build(backward)
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return {k: p.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_sharded_training_equals_one_process_or_is_refused(
    fsdp_results: dict[str, Any], backward: str, config: tuple[str, str, bool | None]
) -> None:
    assert fsdp_results["world"] == 2
    got = fsdp_results[f"{backward} {' '.join(map(str, config))}"]
    if config in REFUSED[backward]:
        assert isinstance(got, str) and got.startswith("ShardedResidualError: stage 's1': "), got
        assert "\n  hint: " in got
        if config[2] is False:
            assert "'f.0.conv1.weight' takes gradients but is not a registered" in got
            assert "use_orig_params=True" in got and "checkpoint(k)" in got
        else:
            assert "its module 'f.0' is sharded by FSDP on its own" in got
            assert "fully_shard to the stage" in got
        return
    assert isinstance(got, dict), got
    want = reference(backward)
    start = dict(build(backward).named_parameters())
    assert got.keys() == want.keys()
    moved = [k for k in want if not torch.equal(want[k], start[k])]
    assert len(moved) == len(want), "every weight of the reference trains"
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-10, msg=key)
