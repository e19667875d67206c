"""Backward modes: small classes with one interface, ``run(stage, state, ctx, tracker)``.

* :class:`Store`: plain autograd through every layer (all activations kept).
* :class:`Checkpoint`: ``torch.utils.checkpoint`` every ``every`` layers; recomputation
  replays randomness (seeded residual calls) and leaves buffers as the forward left them.
* :class:`~odedsl.runtime.invert.Invert`: one custom autograd Function per stage call; O(1)
  activations, inputs reconstructed layer by layer in backward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from torch import Tensor
from torch.utils.checkpoint import checkpoint

from odedsl.runtime.calls import RunContext
from odedsl.runtime.invert import Invert
from odedsl.runtime.program import State
from odedsl.runtime.replay import BufferGuard, ForwardRecord

if TYPE_CHECKING:
    from odedsl.runtime.guard import FiniteTracker
    from odedsl.runtime.stage import OdeStage


class BackwardMode(Protocol):
    """How a stage's layer loop is differentiated."""

    def run(
        self, stage: OdeStage, state: State, ctx: RunContext, tracker: FiniteTracker | None
    ) -> State: ...


BackwardSpec = BackwardMode | str | tuple[str, int]


@dataclass(frozen=True)
class Store:
    """Plain autograd: the baseline, memory linear in depth."""

    def run(
        self, stage: OdeStage, state: State, ctx: RunContext, tracker: FiniteTracker | None
    ) -> State:
        return stage.run_layers(state, 0, stage.depth, ctx, tracker=tracker)

    def __str__(self) -> str:
        return "store"


@dataclass(frozen=True)
class Checkpoint:
    """Keep the state every ``every`` layers; recompute segments in backward."""

    every: int

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or isinstance(self.every, bool):
            raise TypeError(f"checkpoint(k) needs an integer k >= 1, got {self.every!r}")
        if self.every < 1:
            raise ValueError(f"checkpoint(k) needs an integer k >= 1, got {self.every!r}")

    def run(
        self, stage: OdeStage, state: State, ctx: RunContext, tracker: FiniteTracker | None
    ) -> State:
        tables = ctx.tables if ctx.tables is not None else stage.tables()
        forward = ForwardRecord.of(stage, tables)
        for start in range(0, stage.depth, self.every):
            stop = min(start + self.every, stage.depth)
            segment = _Segment(stage, start, stop, ctx, tracker, forward)
            state = tuple(checkpoint(segment, *state, use_reentrant=False))
        return state

    def __str__(self) -> str:
        return f"checkpoint({self.every})"


class _Segment:
    """Layers ``[start, stop)``; calls after the first are recomputations, run as the forward
    ran (:class:`~odedsl.runtime.replay.ForwardRecord`: its weights, flags and depth), whose
    buffer updates (BatchNorm statistics) are undone so each forward counts once. Each
    backward recomputes the last segment first, which checks that no parameter changed in
    place and whether the tree must be restored."""

    def __init__(
        self,
        stage: OdeStage,
        start: int,
        stop: int,
        ctx: RunContext,
        tracker: FiniteTracker | None,
        forward: ForwardRecord,
    ) -> None:
        self.stage, self.start, self.stop, self.ctx, self.tracker = stage, start, stop, ctx, tracker
        self.forward = forward
        self.calls = 0

    def __call__(self, *state: Tensor) -> State:
        self.calls += 1
        if self.calls == 1:
            return self.stage.run_layers(state, self.start, self.stop, self.ctx, None, self.tracker)
        forward, stage = self.forward, self.stage
        if self.stop == forward.geometry[0] or forward.differs is None:  # a backward's first
            forward.check(stage, str(stage.backward_mode))
        with forward.restored(stage), BufferGuard() as guard:
            return stage.run_layers(state, self.start, self.stop, self.ctx, guard)


_FORMS = "'store', 'invert', 'checkpoint(k)' or ('checkpoint', k) with an integer k >= 1"
_CHECKPOINT_K = re.compile(r"checkpoint\((-?[0-9]{1,100})\)")  # ASCII digits only


def parse_backward(spec: BackwardSpec) -> BackwardMode:
    """``"store"``, ``"invert"``, ``"checkpoint(k)"``, ``("checkpoint", k)`` or a mode object;
    a bare ``"checkpoint"`` is ``checkpoint(1)``, as in a spec.

    ``k`` is an ``int`` (not a bool) or ASCII digits; anything else is a TypeError (wrong
    type) or ValueError (unknown text, or k < 1) naming the accepted forms. ``odedsl.compile``
    parses its ``backward`` here too: its diagnostics carry these messages.
    """
    if isinstance(spec, Store | Checkpoint | Invert):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "checkpoint":
        if not isinstance(spec[1], int) or isinstance(spec[1], bool):
            return Checkpoint(spec[1])  # its TypeError
        return _checkpoint(spec[1], spec)
    if not isinstance(spec, str):
        raise TypeError(f"backward mode must be {_FORMS}, or a mode object; got {spec!r}")
    text = spec.replace(" ", "")
    if text == "store":
        return Store()
    if text == "invert":
        return Invert()
    if text == "checkpoint":
        return Checkpoint(1)
    found = _CHECKPOINT_K.fullmatch(text)
    if found:
        return _checkpoint(int(found.group(1)), spec)
    raise ValueError(f"unknown backward mode {spec!r}; expected {_FORMS}")


class SegmentLengthError(ValueError):
    """A ``checkpoint(k)`` with k < 1: a known mode given a value out of range, which callers
    report apart from an unknown mode (``odedsl.compile`` puts a caret on k)."""


def _checkpoint(k: int, spec: BackwardSpec) -> Checkpoint:
    if k < 1:
        raise SegmentLengthError(
            f"backward {spec!r}: the segment length k of checkpoint(k) must be a positive "
            f"integer, got {k}"
        )
    return Checkpoint(k)
