"""Making recomputation replay the forward: random streams and mutable buffers.

Checkpointing and inversion evaluate residuals a second time. Two things must then not differ
from the forward pass:

* randomness (dropout...): a stochastic stage draws one base seed per forward from the global
  generator, and every call of a residual function in layer n runs under a generator seeded
  from ``(base, layer, residual)``: a layer draws one dropout mask per residual function,
  which all the integrator's calls of it in that layer share, as they share its weights θ_n.
  The key names *what* is evaluated, not *when*, so the fused backward (which evaluates
  updates in reverse order), the reverse-time inverse (which reads ``f(x, t + h)`` first)
  and Euler's reverse step (offset 1, where the forward read 0) meet the forward's masks.
  Why one mask per layer, not per call (until 2026-12-03 Heun's two calls and RK4's four drew
  their own): each step then integrates one smooth vector field, f with layer n's mask, so
  the approximate inverses keep their order. With a mask per call the field changed within
  the step, and the reverse step's error was O(h²) per layer whatever the scheme
  (``python -m benchmarks.dropout_order``: tied, N = 64, dropout 0.2, invert against store
  in float64, Heun 1.7e-4 with a mask per call, 9.6e-7 with one per layer, 7.7e-7 without
  dropout; RK4 1.1e-4, 2.7e-11 and 1.6e-11). O(1) memory.
* buffers mutated in forward (BatchNorm running statistics): a :class:`BufferGuard` snapshots
  the buffers of each residual copy the first time recomputation touches it and restores them
  when recomputation ends, so statistics are updated exactly once per forward in every mode.
* what the user may change between a forward and its backward: a :class:`ForwardRecord`
  keeps the module tree's train flags, the parameters' version counters and the stage's depth
  and step; the backward refuses an in-place weight edit and re-runs layers as the forward
  ran them (``model.eval()``, ``functional_call``, ``set_depth`` in between).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage
    from odedsl.runtime.tables import StageTables

_MASK = (1 << 64) - 1


def draw_base_seed() -> int:
    """One seed from the global CPU generator (so ``torch.manual_seed`` fixes a run)."""
    # device="cpu": under torch.set_default_device("cuda") it would draw from the CUDA
    # generator, and .item() would wait for the GPU once per stochastic stage call
    return int(torch.randint(0, 2**62, (), dtype=torch.int64, device="cpu").item())


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
    if device.type == "meta":  # no values, no random stream
        yield
        return
    index = device.index if device.index is not None else 0
    backend = torch.get_device_module(device.type)
    # torch.mps has no device context (one device); cuda and xpu do
    select = backend.device(index) if hasattr(backend, "device") else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        with select:
            backend.manual_seed(seed)
        yield


def write_buffer(buffer: torch.Tensor, value: torch.Tensor) -> None:
    """Copy ``value`` into ``buffer`` without bumping its autograd version counter.

    Why: BatchNorm updates its running statistics inside its kernel, invisibly to version
    counters, and its backward nodes save them (read in eval mode only). A visible ``copy_``
    when a recomputation put them back made every node saved before it stale: a double
    backward (``create_graph=True``, a gradient penalty) through ``checkpoint(k)`` whose
    BatchNorm slot is recomputed in two segments (tied weights; Heun's θ_{n+1}) raised
    autograd's in-place error. Outside a recomputation a buffer holds the forward's final
    value, which is what every node saved there read and reads again."""
    buffer.data.copy_(value)  # .data: the same storage with a version counter of its own


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
        """Put the snapshots back (:func:`write_buffer`: no version bump)."""
        with torch.no_grad():
            for module, buffers in self._saved.values():
                for key, value in buffers.items():
                    write_buffer(module.get_buffer(key), value)
        self._saved.clear()

    def __enter__(self) -> BufferGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


@dataclass
class ForwardRecord:
    """What a stage call's forward saw, for a backward that re-runs its layers (invert's
    reconstruction, checkpoint's recomputation): the tables it used, each module's train
    flag, the parameters' version counters and the stage's depth, step and start time; and
    whether the module tree differs from that now (:meth:`check`, once per backward: asked
    per checkpoint segment, the O(tree) walk made a backward quadratic in depth)."""

    tables: StageTables
    training: list[bool]
    versions: list[int]
    geometry: tuple[int, float, float]
    differs: bool | None = None

    @classmethod
    def of(cls, stage: OdeStage, tables: StageTables) -> ForwardRecord:
        return cls(tables, tables.training_flags(), tables.versions(), stage.geometry)

    def check(self, stage: OdeStage, mode: str) -> None:
        """Refuse a parameter edited in place since the forward, and decide :attr:`differs`."""
        self.tables.check_versions(stage, self.versions, mode)
        self.differs = self.tables.differs(self.training)

    @contextlib.contextmanager
    def restored(self, stage: OdeStage) -> Iterator[None]:
        """The tree (when :meth:`check` found it changed) and the stage's depth and step as
        the forward had them, while the backward re-runs layers; put back after."""
        same = contextlib.nullcontext()
        tree = self.tables.as_in_forward(self.training) if self.differs else same
        with tree, stage.at_geometry(self.geometry):
            yield
