"""The models of ``test_ddp.py``, built identically in the DDP workers and the reference.

Every case is an ``invert``-mode network in float64 (so gradients compare at 1e-10):

* ``tiny``: a spec written here, an exact (Hamiltonian) and an approximate (Heun, tied)
  stage, no batch statistics, so per-process batches give the whole batch's gradient;
* ``hamiltonian``: the shipped ``specs/hamiltonian.ode``, small; its BatchNorm layers (stem
  and head) would see per-process batches, so the model runs in eval mode;
* ``syncbn``: BatchNorm *inside* the residuals of exact and approximate invert stages,
  converted with :func:`odedsl.parallel.convert_sync_batchnorm`: statistics span both
  processes, so DDP must match one process with plain BatchNorm on the whole batch.
* ``measured``: a momentum stage (γ = 1/2) with synchronised BatchNorm in its residual, whose
  first call measures its anchors (odedsl/runtime/invert.py); the workers give the two ranks
  opposite anchor tolerances, so only an agreement over the process group keeps one rank from
  replaying its forward (SyncBatchNorm's all-reduces included) while the other does not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import odedsl
from odedsl.parallel import convert_sync_batchnorm

STEPS = 3
SPECS = Path(__file__).resolve().parents[2] / "specs"

TINY = """\
network tiny(depth: int = 3) {
    input image[2, 6, 6]
    stem { conv2d(4, kernel=3, padding=1) tanh }
    stage s1 = ode(depth) {
        integrator hamiltonian
        backward invert
        residual { conv2d(2, kernel=3, padding=1) as K tanh transpose(K) }
    }
    transition { avgpool(2) pad_channels(6) }
    stage s2 = ode(depth) {
        integrator heun
        weights tied
        backward invert
        residual { conv2d(6, kernel=3, padding=1) tanh }
    }
    head { adaptive_avgpool2d(1) flatten linear(3) }
}
"""

SYNCBN = """\
network bn(depth: int = 3) {
    input image[2, 4, 4]
    stem { conv2d(4, kernel=3, padding=1) }
    stage s1 = ode(depth) {
        integrator additive_coupling
        backward invert
        residual { conv2d(2, kernel=3, padding=1) batchnorm2d tanh }
    }
    stage s2 = ode(depth) {
        integrator euler
        backward invert
        residual { conv2d(4, kernel=3, padding=1) batchnorm2d(momentum=0.3) tanh }
    }
    head { flatten linear(3) }
}
"""

MEASURED = """\
network measured(depth: int = 6) {
    input image[2, 4, 4]
    stem { conv2d(4, kernel=3, padding=1) }
    stage s1 = ode(depth) {
        integrator momentum(gamma=0.5)
        backward invert
        residual { conv2d(4, kernel=3, padding=1) batchnorm2d tanh }
    }
    head { flatten linear(3) }
}
"""

CASES = ("tiny", "hamiltonian", "syncbn", "measured")


def build(name: str, sync: bool = True) -> nn.Module:
    """The case's model with seeded weights; ``sync=False``: plain BatchNorm (the reference)."""
    torch.manual_seed(0)
    if name == "tiny":
        model = odedsl.compile(TINY, dtype=torch.float64)
    elif name == "hamiltonian":
        model = odedsl.compile(SPECS / "hamiltonian.ode", dtype=torch.float64, depth=2, size=8)
        with torch.no_grad():  # running statistics away from (0, 1), as after training
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        model.eval()
    else:
        model = odedsl.compile(SYNCBN if name == "syncbn" else MEASURED, dtype=torch.float64)
        if sync:
            convert_sync_batchnorm(model)
    return model


def batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch (8 samples), the same in every process."""
    g = torch.Generator().manual_seed(1)
    shape = {"tiny": (2, 6, 6), "hamiltonian": (3, 8, 8)}.get(name, (2, 4, 4))
    x = torch.randn(8, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3 if name != "hamiltonian" else 10, (8,), generator=g)
    return x, y


def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y)  # a mean: DDP's average of halves is the whole
