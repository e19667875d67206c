"""Residual calls of one layer, and the run context a stage forward fixes.

A :class:`LayerCall` is the ``ResidualCall`` a program's step receives: it resolves the weight
schedule for its layer, blends slots when needed, replays the random stream of a stochastic
stage and records which slots it touched (so a backward VJP differentiates only those).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call

from odedsl.runtime.compiled import StepCompiler
from odedsl.runtime.program import State
from odedsl.runtime.replay import BufferGuard, mix_seed, seeded, write_buffer
from odedsl.runtime.tables import SlotKey, StageTables
from odedsl.runtime.weights import Blend

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage


#: A residual call's place in the forward: layer, update, residual, offset, occurrence, slot
#: (the key of the buffers a call read; its random stream is keyed by layer and residual).
CallKey = tuple[int, ...]


@dataclass(frozen=True)
class RunContext:
    """What one stage forward fixes for all later recomputation: the base seed, the
    stage's :class:`StageTables` as validated at the start of that forward (if it did), the
    :class:`StepCompiler` its residuals run through (``None``: plain module calls), and
    ``buffers``: what each call of a slot in :attr:`StageTables.replayed` read (``None``: no
    such slot, or no recomputation to come).

    Why ``buffers``: a module whose output reads a buffer it updates in train mode (spectral
    normalisation's power iteration, ``torch.nn.utils.parametrizations.spectral_norm``) gave
    a recomputation other weights than the forward used: 0.7–2.8 % gradient error, silently,
    in checkpoint and invert. Each forward call of such a slot now keeps that slot's buffers
    as the call found them, and its recomputations read them again (the keyed calls of a
    stochastic stage name each call, so the forward and every re-run agree on which it is)."""

    seed: int | None
    tables: StageTables | None = None
    compiler: StepCompiler | None = None
    buffers: dict[CallKey, list[Tensor]] | None = None

    @property
    def keyed(self) -> bool:
        """Whether residual calls are named (:class:`LayerCall`) and steps run update by
        update, as the fused backward names them: a random stream or buffers to replay."""
        return self.seed is not None or self.buffers is not None


class ResidualMemo:
    """Residual values a layer's recomputation produced, offered to the next reconstruction.

    Why: an approximate inverse (the reverse-time Euler, Heun and RK4 steps of seed 000,
    eq. 6 and 9) evaluates the residual at the layer's *output*, which is the input the walk
    reconstructed for the layer after it, where that layer's recomputation evaluated the
    residual just before. When both evaluations use the same weights (tied or shared
    schedules; HeunNet's θ_{n+1} with untied weights), the inverse takes that value instead of
    evaluating again: one residual evaluation saved per layer, the same arithmetic as a
    fused exact step. Keys are the residual, the blend (slots and weights) and the input
    tensor's storage, offset, shape, strides, dtype and version counter, so only the very
    same values match; each entry holds its input so the storage cannot be freed and reused.
    Unused for stochastic stages (each layer replays its own random stream).
    """

    def __init__(self) -> None:
        self.offered: dict[tuple[object, ...], tuple[Tensor, Tensor]] = {}
        self.fresh: dict[tuple[object, ...], tuple[Tensor, Tensor]] = {}

    @staticmethod
    def key(name: str, blend: Blend, x: Tensor) -> tuple[object, ...]:
        return (
            name,
            blend,
            x.untyped_storage().data_ptr(),
            x.storage_offset(),
            x.shape,
            x.stride(),
            x.dtype,
            x._version,
        )

    def take(self, key: tuple[object, ...]) -> Tensor | None:
        found = self.offered.get(key)
        return None if found is None else found[1]

    def keep(self, key: tuple[object, ...], x: Tensor, out: Tensor) -> None:
        """Keep ``out`` if ``x`` is a state the walk hands on (a leaf, not an intermediate
        like Heun's ``x + h k1``): one value per state and residual, O(1) memory."""
        if x.grad_fn is None:
            self.fresh[key] = (x, out.detach())

    def advance(self) -> None:
        """Offer what the last recomputation kept (and only that) to the next inverse."""
        self.offered, self.fresh = self.fresh, {}


class LayerCall:
    """The :data:`ResidualCall` of layer ``n``: picks (or blends) the slot, replays the RNG.

    ``touched`` collects the slots evaluated (so a VJP differentiates only their
    parameters); ``guard`` protects their buffers during recomputation; ``scope`` is the
    update index that keys the random stream (0: the whole step). ``tables``: the stage's
    validated :class:`StageTables` (faster slot lookup, only buffered slots protected).
    ``memo``: a :class:`ResidualMemo` to take values from (``keep=False``, an inverse) or to
    keep them in (``keep=True``, a recomputation); ignored when the stage is stochastic.
    ``reverse``: the calls of an approximate inverse (``step.inverse``), which replay the
    forward call :func:`replayed_offset` names.
    """

    def __init__(
        self,
        stage: OdeStage,
        n: int,
        ctx: RunContext,
        scope: int = 0,
        touched: set[SlotKey] | None = None,
        guard: BufferGuard | None = None,
        tables: StageTables | None = None,
        memo: ResidualMemo | None = None,
        keep: bool = False,
        reverse: bool = False,
    ) -> None:
        self.stage, self.n, self.ctx, self.scope = stage, n, ctx, scope
        self.touched, self.guard, self.tables = touched, guard, tables
        self.memo = memo if not ctx.keyed else None
        self.keep = keep
        self.reverse = reverse
        self._seen: dict[tuple[str, float], int] = {}

    def __call__(self, name: str, x: Tensor, c: float) -> Tensor:
        stage = self.stage
        if self.reverse:
            own = stage.program.residual_offsets
            c = replayed_offset(stage.program.offsets if own is None else own[name], c)
        blend = stage.blend(self.n, c)
        tables = self.tables
        modules = tables.slots[name] if tables is not None else stage.residual_modules(name)
        for slot, _ in blend:
            if self.touched is not None:
                self.touched.add((name, slot))
            if self.guard is not None and (tables is None or (name, slot) in tables.buffered):
                self.guard.protect(modules[slot])
        compiler = self.ctx.compiler
        if not self.ctx.keyed:
            memo = self.memo
            if memo is not None:
                key = memo.key(name, blend, x)
                if not self.keep and (found := memo.take(key)) is not None:
                    return found
            if compiler is not None:
                out = _evaluate_compiled(compiler, name, modules, blend, x, tables)
            else:
                out = _evaluate(modules, blend, x)
            if memo is not None and self.keep:
                memo.keep(key, x, out)
            return out
        occurrence = self._seen.get((name, c), 0)
        self._seen[(name, c)] = occurrence + 1
        key = (self.n, self.scope, stage.program.residuals.index(name), _key_offset(c))
        kept: list[tuple[CallKey, list[Tensor], list[int]]] = []
        if self.ctx.buffers is not None and tables is not None:
            kept = self._replay_buffers(name, blend, modules, (*key, occurrence), tables)
        seed = self.ctx.seed
        stream = None if seed is None else random_stream(seed, (*key, occurrence))
        with nullcontext() if stream is None else seeded(x.device, stream):
            if compiler is not None:
                out = _evaluate_compiled(compiler, name, modules, blend, x, tables)
            else:
                out = _evaluate(modules, blend, x)
        for call, buffers, versions in kept:  # buffers the call only read: as they are now
            if [b._version for b in buffers] == versions:
                del self.ctx.buffers[call]  # type: ignore[union-attr]
        return out

    def _replay_buffers(
        self,
        name: str,
        blend: Blend,
        modules: Sequence[nn.Module],
        key: CallKey,
        tables: StageTables,
    ) -> list[tuple[CallKey, list[Tensor], list[int]]]:
        """The forward (no guard) keeps the buffers of each replayed slot this call reads; a
        re-run (guarded: what it changes is put back after) reads them again. A call the
        forward never made (an approximate inverse's) reads the buffers as they are.

        Returns the forward's new copies with the slot's buffer versions: a call that did not
        write its buffers (orthogonal's ``base``) drops its copy after the call, so only
        buffers a call updates cost memory per call."""
        kept = self.ctx.buffers
        assert kept is not None
        new: list[tuple[CallKey, list[Tensor], list[int]]] = []
        for slot, _ in blend:
            if (name, slot) not in tables.replayed:
                continue
            buffers = tables.buffers_of(name, slot)
            call = (*key, slot)
            if self.guard is None:
                kept[call] = [b.detach().clone() for b in buffers]
                new.append((call, buffers, [b._version for b in buffers]))
            elif (found := kept.get(call)) is not None:
                with torch.no_grad():
                    for b, value in zip(buffers, found, strict=True):
                        write_buffer(b, value)
        return new


def random_stream(seed: int, call: CallKey) -> int:
    """The seed a residual call runs under: one per layer and residual function, whatever
    the call's update, offset and occurrence (``call``: layer, update, residual, offset,
    occurrence), so a layer draws one dropout mask per function (:mod:`.replay` says why)."""
    layer, _update, residual = call[:3]
    return mix_seed(seed, layer, residual)


def _key_offset(c: float) -> int:
    """An offset as it keys a call (micro-steps: offsets written as 1/3 meet)."""
    return round(c * 1e6)


def replayed_offset(offsets: Sequence[float], c: float) -> float:
    """The offset of the forward call that an approximate inverse's call at offset ``c``
    replays (weights and kept buffers; the random stream is the layer's at any offset),
    given the residual's forward ``offsets`` (the program's, where it does not say each
    residual's).

    Why: a program that reads no residual ahead (Euler) runs one function per layer, and its
    reverse step reads it at offset 1 (x_n ≈ x_{n+1} − h f(x_{n+1}, θ_n), seed 000 eq. 6),
    where no forward call was. Under interpolated weights that call read θ(t_{n+1}), layer
    n + 1's (untied and shared weights already gave such a layer its own slot at any
    offset), so the reconstruction depended on how fast θ moves: 6.2e-3 off store at
    N = 32, 3.4e-4 with θ_n. Such calls replay offset 0, layer n's own call. A program that
    reads ahead keeps ``c``: its reverse-time call at t + c h replays the forward's call at
    that time (Heun's reverse reads f at t + h first, as the forward's corrector did with
    θ_{n+1}, eq. 9). A residual the forward calls at one offset only is the same function
    at any reverse call: that call is replayed (in ``x += h (f(x, t) + g(x, t + h))`` the
    reverse reads f at 1 and g at 0, where neither ran). Before random streams were keyed
    by layer alone, these choices also picked the dropout masks (fresh ones where no
    forward call was: Euler with dropout 5.2e-3 off store at N = 64 against 4.8e-5).
    """
    if any(_key_offset(o) == _key_offset(c) for o in offsets):
        return c
    if len(offsets) == 1:
        return offsets[0]
    return c if any(_key_offset(o) > 0 for o in offsets) else 0.0


def _blended(modules: Sequence[nn.Module], blend: Blend) -> tuple[int, dict[str, Tensor]]:
    """The heaviest slot of a blend and the blended parameters."""
    heavy = max(blend, key=lambda b: b[1])[0]
    names = [k for k, _ in modules[heavy].named_parameters()]
    per_slot = [dict(modules[i].named_parameters()) for i, _ in blend]
    params = {k: sum(w * p[k] for (_, w), p in zip(blend, per_slot, strict=True)) for k in names}
    return heavy, params


def _evaluate(modules: Sequence[nn.Module], blend: Blend, x: Tensor) -> Tensor:
    """One slot: call it. A blend: blended parameters, buffers of the heaviest slot."""
    if len(blend) == 1:
        return modules[blend[0][0]](x)
    heavy, params = _blended(modules, blend)
    return functional_call(modules[heavy], params, (x,))


def _evaluate_compiled(
    compiler: StepCompiler,
    name: str,
    modules: Sequence[nn.Module],
    blend: Blend,
    x: Tensor,
    tables: StageTables | None,
) -> Tensor:
    """As :func:`_evaluate`, through the residual's one compiled graph (slot 0 its template,
    the slot's own train/eval flag); a slot's tensors come from ``tables`` when given."""
    if len(blend) == 1:
        slot = blend[0][0]
        module = modules[slot]
        if tables is not None:
            params, buffers = tables.tensors_of(name, slot)
        else:
            params, buffers = dict(module.named_parameters()), dict(module.named_buffers())
    else:
        slot, params = _blended(modules, blend)
        module = modules[slot]
        buffers = dict(module.named_buffers())
    return compiler.residual(name, modules[0], module.training)(params, buffers, x)


def keep_dtypes(new: State, old: State) -> State:
    """Keep each state variable in its initial dtype (float32 under autocast)."""
    return tuple(a if a.dtype == b.dtype else a.to(b.dtype) for a, b in zip(new, old, strict=True))
