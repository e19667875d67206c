"""One DDP process of ``test_ddp.py``, started by ``torchrun --nproc_per_node=2`` (gloo, CPU).

For each case: build the model exactly as the test's single-process reference does, wrap it in
``DistributedDataParallel``, take this rank's half of the global batch, run one forward and
backward (gradients saved) and then ``STEPS`` SGD steps (parameters and buffers saved).
Rank 0 writes everything to ``--out``; the test compares with one process on the whole batch.
Also records whether ``torch.nn.SyncBatchNorm`` accepts CPU tensors under gloo.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import odedsl.runtime.invert as invert_module
from odedsl.runtime import OdeStage
from tests.reliability.ddp_cases import CASES, STEPS, batch, build, loss_fn
from tests.reliability.torchrun import finish


def run_case(name: str, rank: int, world: int) -> dict[str, object]:
    model = build(name)
    if name == "measured":  # rank 0 measures a drift that needs anchors, rank 1 none
        invert_module.MEASURE_MARGIN = math.inf if rank == 0 else 1e-300
    ddp = DistributedDataParallel(model)
    x, y = batch(name)
    per = x.shape[0] // world
    mine = slice(rank * per, (rank + 1) * per)
    loss = loss_fn(ddp(x[mine]), y[mine])
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    opt.zero_grad()
    for step in range(STEPS):
        if name == "measured" and step == 1 and rank == 0:  # only rank 0 forgets what it
            model.load_state_dict(model.state_dict())  # measured: both must measure again
        opt.zero_grad()
        loss_fn(ddp(x[mine]), y[mine]).backward()
        opt.step()
    plans: list[object] = [None] * world
    mine_plan = [
        tuple(s.anchor_plan(torch.float64)) for s in model.modules() if isinstance(s, OdeStage)
    ]
    dist.all_gather_object(plans, mine_plan)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"grads": grads, "state": state, "plans": plans}


def torch_syncbn_on_cpu() -> str:
    """What ``torch.nn.SyncBatchNorm`` does with a CPU tensor under gloo: "ok" or the error."""
    bn = torch.nn.SyncBatchNorm(3).train()
    try:
        bn(torch.randn(4, 3, 2, 2))
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results: dict[str, object] = {"world": world, "torch_syncbn": torch_syncbn_on_cpu()}
    for name in args.cases:
        results[name] = run_case(name, rank, world)
    finish(results, args.out)


if __name__ == "__main__":
    main()
