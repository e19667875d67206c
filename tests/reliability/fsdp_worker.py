"""One FSDP process of ``test_fsdp.py``, started by ``torchrun --nproc_per_node=2`` (gloo, CPU).

For every backward mode and way of sharding (``CONFIGS``): build :data:`NET` with seeded
weights, shard it, take this rank's half of the global batch, run ``STEPS`` SGD steps and keep
the full parameters (gathered), or the error's class and message when a step raised. Rank 0
writes everything to ``--out``; the test compares with one process on the whole batch.

Ways of sharding, FSDP2 (``fully_shard``) and FSDP1 (``FullyShardedDataParallel``):
``root`` (the whole model), ``stages`` (each ODE stage, then the root) and ``residuals`` (each
residual module of a stage on its own, the per-block wrapping FSDP users often choose, then the
root); FSDP1 with ``use_orig_params`` True and False (its default, which holds weights as views
of one flat parameter).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import odedsl
from odedsl.runtime import OdeStage
from odedsl.runtime.layers import Sequence
from tests.reliability.torchrun import finish

STEPS = 2
LR = 0.5
MODES = ("store", "checkpoint(1)", "invert")
#: (FSDP version, what is sharded, FSDP1's use_orig_params)
CONFIGS = (
    ("fsdp2", "root", None),
    ("fsdp2", "stages", None),
    ("fsdp2", "residuals", None),
    ("fsdp1", "root", True),
    ("fsdp1", "stages", True),
    ("fsdp1", "residuals", True),
    ("fsdp1", "root", False),
)
#: An exact stage, an approximate tied one and a momentum stage (whose first call measures
#: its anchors: a second forward and a reconstruction inside the stage's forward).
NET = """\
network sharded(depth: int = 3) {
    input image[2, 6, 6]
    stem { conv2d(4, kernel=3, padding=1) tanh }
    stage s1 = ode(depth) {
        integrator hamiltonian
        residual { conv2d(2, kernel=3, padding=1) as K tanh transpose(K) }
    }
    transition { avgpool(2) pad_channels(6) }
    stage s2 = ode(depth) {
        integrator heun
        weights tied
        residual { conv2d(6, kernel=3, padding=1) tanh }
    }
    stage s3 = ode(depth) {
        integrator momentum(gamma=0.5)
        residual { conv2d(6, kernel=3, padding=1) tanh conv2d(6, kernel=1) }
    }
    head { adaptive_avgpool2d(1) flatten linear(3) }
}
"""


def build(backward: str) -> nn.Module:
    torch.manual_seed(0)
    return odedsl.compile(NET, dtype=torch.float64, backward=backward)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch (8 samples), the same in every process."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 2, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (8,), generator=g)


def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y)  # a mean: the average of halves is the whole


def residuals(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for s in model.modules()
        if isinstance(s, OdeStage)
        for m in s.modules()
        if isinstance(m, Sequence)
    ]


def shard(model: nn.Module, version: str, what: str, orig: bool | None) -> nn.Module:
    """``model`` sharded as the config says; returns what to call."""
    parts = {
        "root": [],
        "stages": [m for m in model.modules() if isinstance(m, OdeStage)],
        "residuals": residuals(model),
    }[what]
    if version == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for part in parts:
            fully_shard(part)
        fully_shard(model)
        return model
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    policy = ModuleWrapPolicy({type(parts[0])}) if parts else None
    return FullyShardedDataParallel(
        model, device_id=torch.device("cpu"), use_orig_params=orig, auto_wrap_policy=policy
    )


def full_state(wrapped: nn.Module, model: nn.Module, version: str) -> dict[str, torch.Tensor]:
    """The whole parameters, gathered from every rank."""
    if version == "fsdp2":
        return {
            k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.named_parameters()
        }
    from torch.distributed.fsdp import FullyShardedDataParallel, StateDictType

    with FullyShardedDataParallel.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT):
        state = wrapped.state_dict()
    names = {k for k, _ in build("store").named_parameters()}
    return {k: v.detach().clone() for k, v in state.items() if k in names}


def run(backward: str, version: str, what: str, orig: bool | None, rank: int) -> object:
    model = build(backward)
    x, y = batch()
    mine = slice(rank * 4, rank * 4 + 4)
    try:
        wrapped = shard(model, version, what, orig)
        opt = torch.optim.SGD(wrapped.parameters(), lr=LR)
        for _ in range(STEPS):
            opt.zero_grad()
            loss_fn(wrapped(x[mine]), y[mine]).backward()
            opt.step()
    except Exception as exc:  # the test asserts which configurations may raise, and what
        return f"{type(exc).__name__}: {exc}"
    return full_state(wrapped, model, version)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results: dict[str, object] = {"world": dist.get_world_size()}
    for backward in MODES:
        for version, what, orig in CONFIGS:
            key = f"{backward} {version} {what} {orig}"
            results[key] = run(backward, version, what, orig, rank)
            dist.barrier()
    finish(results, args.out)


if __name__ == "__main__":
    main()
