"""Run generated networks in a fresh interpreter (imports torch only, never odedsl).

``python worker.py JOBS``: ``JOBS`` is a ``torch.save``d list of jobs, each naming a folder, a
generated module, a backward mode, a reference file (state dict and input) and a result file.
For each job the worker builds the network in float64, checks its ``state_dict`` keys against
the reference's, loads the reference state, runs one forward/backward pass and saves what
:func:`forward_backward` returns, plus whether ``odedsl`` could be imported.
"""

from __future__ import annotations

import importlib
import sys

import torch
from torch import nn


def forward_backward(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output, input gradient, parameter gradients and buffers after one training step."""
    model.train()
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    (y.square().sum() + y.sum()).backward()
    out = {"out": y.detach(), "x.grad": x.grad}
    out.update({f"{k}.grad": p.grad for k, p in model.named_parameters() if p.grad is not None})
    out.update({f"{k}.buffer": b.detach().clone() for k, b in model.named_buffers()})
    return out


def odedsl_importable() -> bool:
    try:
        importlib.import_module("odedsl")
    except ImportError:
        return False
    return True


def main(jobs_file: str) -> int:
    torch.set_num_threads(1)
    for job in torch.load(jobs_file, weights_only=False):
        if job["folder"] not in sys.path:
            sys.path.insert(0, job["folder"])
        module = importlib.import_module(job["module"])
        ref = torch.load(job["ref"], weights_only=False)
        net = module.build(backward=job["mode"], dtype=torch.float64)
        keys = list(net.state_dict())
        net.load_state_dict(ref["state"])
        torch.manual_seed(0)
        result = forward_backward(net, ref["x"])
        loaded = sorted(m for m in sys.modules if m == "odedsl" or m.startswith("odedsl."))
        torch.save(
            {"result": result, "keys": keys, "state": net.state_dict(), "odedsl_modules": loaded},
            job["result"],
        )
    print("importable" if odedsl_importable() else "blocked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
