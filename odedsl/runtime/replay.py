"""Making recomputation replay the forward: random streams and mutable buffers.

Checkpointing and inversion evaluate residuals a second time. Two things must then not differ
from the forward pass:

* randomness (dropout...): a stochastic stage draws one base seed per forward from the global
  generator, and every residual call runs under a generator seeded from ``(base, layer,
  update, residual, offset, occurrence)``. The key names *what* is evaluated, not *when*, so
  the fused backward (which evaluates updates in reverse order) and the reverse-time inverse
  (which reads ``f(x, t + h)`` first) meet the same masks as the forward. O(1) memory.
* buffers mutated in forward (BatchNorm running statistics): a :class:`BufferGuard` snapshots
  the buffers of each residual copy the first time recomputation touches it and restores them
  when recomputation ends, so statistics are updated exactly once per forward in every mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_MASK = (1 << 64) - 1


def draw_base_seed() -> int:
    """One seed from the global CPU generator (so ``torch.manual_seed`` fixes a run)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64).item())


def mix_seed(base: int, *key: int) -> int:
    """A 63-bit seed from a base and integer key parts (splitmix64 finaliser per part)."""
    z = base & _MASK
    for part in key:
        z = (z + 0x9E3779B97F4A7C15 + (part & _MASK)) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z ^= z >> 31
    return z >> 1


@contextlib.contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Run the body on a private random stream of ``device`` seeded with ``seed``.

    Only that device's generator is forked and seeded; the caller's stream is restored after.
    """
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    index = device.index if device.index is not None else 0
    backend = getattr(torch, device.type)
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        with backend.device(index):
            backend.manual_seed(seed)
        yield


class BufferGuard:
    """Snapshot buffers of modules on first touch; restore them all on :meth:`restore`."""

    def __init__(self) -> None:
        self._saved: dict[int, tuple[nn.Module, dict[str, torch.Tensor]]] = {}

    def protect(self, module: nn.Module) -> None:
        if id(module) in self._saved:
            return
        buffers = {k: b.detach().clone() for k, b in module.named_buffers() if b is not None}
        self._saved[id(module)] = (module, buffers)

    def restore(self) -> None:
        with torch.no_grad():
            for module, buffers in self._saved.values():
                for key, value in buffers.items():
                    module.get_buffer(key).copy_(value)
        self._saved.clear()

    def __enter__(self) -> BufferGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
