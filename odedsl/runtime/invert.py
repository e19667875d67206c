"""Invert mode: one autograd Function per stage call, activations reconstructed in backward.

Forward runs every layer under ``no_grad`` and saves only the final state. Backward walks the
layers in reverse. Steps written as exact updates take the *fused* path: each update's
increment ``e`` is evaluated once with grad, both to undo the update
(``old = (new - e) / factor``) and for its VJP. Other steps (approximate kinds, a two-step
scheme's first step) are reconstructed with ``step.inverse`` and recomputed with grad; the
inverse takes the residual values the previous layer's recomputation computed at the same
tensor with the same weights (:class:`~odedsl.runtime.calls.ResidualMemo`: tied and shared
schedules, HeunNet's θ_{n+1}), so such a step evaluates the residual once per layer fewer.
All residual parameters are inputs of the Function, so tied weights accumulate.

Re-anchoring (``exact-unstable`` kinds): undoing ``factor * x`` with ``|factor| < 1``
multiplies rounding errors by ``1 / |factor|`` per layer. The forward therefore also keeps the
state every ``anchor_every`` layers, the largest ``k`` with ``growth**k * eps <= anchor_tol``
(``growth`` = the product of ``1 / |factor|`` over a step's updates, ``eps`` the state dtype's
machine epsilon), and backward restarts reconstruction from each anchor. Memory is then
``(N - 1) // anchor_every`` extra states instead of O(1); :meth:`Invert.plan` reports it.
Default tolerances: 1e-10 (float64), 1e-5 (float32), 1e-2 (other dtypes); when the step
has no updates the growth is unknown and ``DEFAULT_ANCHOR_EVERY`` is used. Under autocast the
dtype is the autocast one, which the residuals compute in (:func:`_precision`; a float64
state stays float64, as autocast leaves it), and a 16-bit stage input is inverted over a
float32 state, in every mode (:meth:`OdeStage.final_state`).
``Invert(anchor_every=k)`` sets the spacing explicitly, for any kind.

Measured anchors (any exact kind): the factors alone miss rounding that the residuals
amplify. A stage that amplifies its state (momentum with γ = 3, a coupling with large linear
residuals: factors of 1, "exact") reconstructs its input only to within rounding of the
*output*; momentum with γ = 1/2 and large weights grows rounding faster than 2^n through
``x → f → v``. Their float64 gradients were 0.36, 5.7 and 2e-5 off. So the first
gradient-taking call of an exact stage (per depth, dtype, device and tolerance) *measures*:
its forward also keeps a :mod:`sketch <odedsl.runtime.sketch>` of every layer's input
(17 numbers each), then walks back from the output without grad, estimating each
reconstructed input's drift, and takes the spacing below which the drift stays under the
aim, ``anchor_tol / MEASURE_MARGIN``, never below ``MEASURE_FLOOR_EPS`` units of the dtype's
rounding nor below ``ONE_LAYER_GROWTH`` times the drift one reconstructed layer already has
(anchors bound the growth of rounding; the one-layer floor is no anchor's to remove). When
that is denser than the plan it replays the forward (no grad, buffers guarded, same random
streams) to keep those anchors, then reconstructs once more against them and the true input,
halving the spacing while a segment drifts too far (the first walk saw growth near the input
only far from a restart). The measuring call costs 1.5–1.6× a steady invert step, once
(``benchmarks.overhead``). The measured spacing is kept on the
stage and only ever tightens (``load_state_dict`` forgets it); a spacing of 1 (every layer:
store's memory) is warned once (:class:`AnchorWarning`). A lifted aim is never trusted past
the drift check's tolerance (``EXACT_DRIFT_TOL``, or the dtype's floor where higher): a walk
that loses the state within one layer (auxiliary states growing doubly exponentially) has
each segment recomputed from its anchor, as ``checkpoint(1)``, and the warning says so (its
float64 gradients had been 1e75 off behind the memory warning).

Every backward of an exact kind compares its reconstruction with each anchor it meets (one
sync per anchor). Above half the tolerance the next call measures again (weights that grew
in training); above the tolerance the segment above that anchor is recomputed from it like
``checkpoint`` (exact) and warned once (weights that jumped since the measurement, or that
changed between forward and backward). Only the segment below the first anchor, or a stage
without anchors, depends on the input sketch, which warns. When the residuals communicate
(a ``SyncBatchNorm`` in training, over more than one process), every decision that changes
how many residual evaluations a call makes (measure, replay, re-measure) is agreed over that
process group first, so no rank waits in a collective the others skip.
``Invert(measure_anchors=False)`` (or an explicit ``anchor_every``) keeps the static plan.
An anchor keeps the whole state, not only the variables whose update divides: keeping
momentum's ``v`` alone (half the memory) lets ``x``'s reconstruction error, never reset, feed
back into ``v`` through ``f`` and be amplified again in every interval. Measured (2026-12-02,
``benchmarks.peers --groups momentum``, γ = 0.9): the float64 gradient was 5e15 off at
N = 1024, against 3.9e-11 with whole-state anchors.

Rounding in recursions with a double root: the leapfrog network written as the two-step
``next = 2x - prev - h² f(x)`` grows rounding errors linearly in depth in any mode (its float32
store and invert gradients differed by 9e-7, 3e-5, 1.1e-3 at N = 10, 100, 1000, and float32
store itself was 5e-4 off float64 at N = 1000); the reconstruction was not the cause (the stage
input came back to 4e-7). The standard ``leapfrog`` is therefore written in summed form on
``(x, d = x - prev)`` (two plain additions per layer, a ``start`` block for the first): float32
invert against store 3.9e-8, 1.2e-8, 3.7e-9 at the same depths
(``benchmarks/results/leapfrog-summed``). A user-written two-step scheme of that kind keeps
the two-step rounding; the drift sketch below does not see it, since it is the forward's.

Every backward of an exact kind also estimates how far the reconstructed stage input drifted
from the true one, from a sketch of the input (17 numbers per stage,
:mod:`odedsl.runtime.sketch`), and warns once per stage when the drift is catastrophic, so an
inverse made unreliable by amplified rounding is never silent. ``ODEDSL_CHECK_INVERSE=0`` or
``check_inverse=False`` switches that off; ``ODEDSL_CHECK_INVERSE=1`` keeps the true input
and checks exactly instead.

NaN/Inf (always an error naming the stage and layer) costs no per-layer work on fused steps:
there ``old = (new - e) / factor`` keeps a non-finite value non-finite, so it reaches the
reconstructed stage input. States entering a non-fused inverse (which might mask it) or
replaced by an anchor are folded into a running sum first (:class:`FiniteProbe`); one sync at
the end checks it, and only on failure a second, gradient-free walk locates the first bad
layer (:func:`_locate_non_finite`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from odedsl.runtime.calls import LayerCall, ResidualMemo, RunContext, SlotKey, keep_dtypes
from odedsl.runtime.errors import AnchorWarning, InversionDriftWarning, NumericalFault
from odedsl.runtime.guard import (
    NON_FINITE_HINTS,
    FiniteProbe,
    FiniteTracker,
    exact_drift_tolerance,
    inverse_tolerance,
    relative_drift,
    relative_error,
    report_drift,
)
from odedsl.runtime.program import EXACT_KINDS, AffineUpdate, IntegratorProgram, State, Step
from odedsl.runtime.replay import BufferGuard, ForwardRecord
from odedsl.runtime.sketch import (
    estimated_drift,
    layer_drift,
    sketch,
    sketch_enabled,
    warn_if_drifted,
)

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage
    from odedsl.runtime.tables import StageTables

ANCHOR_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
DEFAULT_ANCHOR_EVERY = 16
#: Measured spacing aims this far below the anchor tolerance: the sketch estimates within a
#: factor of about 2, and rounding does not grow exactly geometrically.
MEASURE_MARGIN = 8.0
#: ... but never below this many units of rounding of the state's dtype (bfloat16's unit
#: roundoff is above 1e-2 / 8: one layer's rounding crossed the target, every layer anchored).
MEASURE_FLOOR_EPS = 8.0
#: ... nor below this multiple of the drift one reconstructed layer already has (measured):
#: anchors bound the *growth* of rounding; the one-layer floor is no anchor's to remove
#: (a float64 Hamiltonian stage with 2e-13 after one layer was anchored at every layer).
ONE_LAYER_GROWTH = 16.0
#: A backward whose drift passes this fraction of the tolerance makes the next call measure.
RECHECK_FRACTION = 0.5


class AnchorPlan(NamedTuple):
    """Anchor spacing (``None``: no anchors) and how many states that keeps."""

    every: int | None
    count: int


@dataclass(frozen=True)
class Invert:
    """Memory-free backward by inversion (O(1) states; O(N / anchor_every) for exact-unstable
    kinds, see the module docstring). ``anchor_tol`` overrides the re-anchoring tolerance.
    ``anchor_every=k`` keeps the state every ``k`` layers for *any* inverse kind (overriding
    the automatic plan), e.g. to bound the float32 rounding growth of two-step schemes."""

    anchor_tol: float | None = None
    anchor_every: int | None = None
    measure_anchors: bool = True

    def __post_init__(self) -> None:
        k = self.anchor_every
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"anchor_every must be an integer >= 1, got {k!r}")
        # checked here, not at the first backward: a tolerance of -1 or "x" used to be kept
        tol = self.anchor_tol
        if tol is not None and (
            not isinstance(tol, int | float) or isinstance(tol, bool) or not 0 < tol < math.inf
        ):
            raise ValueError(f"anchor_tol must be a finite number above 0 (or None), got {tol!r}")
        if not isinstance(self.measure_anchors, bool):
            raise TypeError(f"measure_anchors must be True or False, got {self.measure_anchors!r}")

    def plan(self, program: IntegratorProgram, depth: int, dtype: torch.dtype) -> AnchorPlan:
        """Where the forward keeps anchors for a state of ``dtype`` (exact-unstable kinds, or
        every ``anchor_every`` layers when that is set)."""
        if self.anchor_every is not None:
            return _spaced(self.anchor_every, depth)
        step = program.step
        if step.kind != "exact-unstable":
            return AnchorPlan(None, 0)
        tol = self.tolerance(dtype)
        growth = _growth(step)
        if growth is None:
            every = DEFAULT_ANCHOR_EVERY
        elif growth <= 1.0:
            return AnchorPlan(None, 0)
        else:
            layers = math.log(max(tol / torch.finfo(dtype).eps, 1.0)) / math.log(growth)
            if layers >= depth:
                return AnchorPlan(None, 0)
            every = max(1, math.floor(layers))
        return _spaced(every, depth)

    def tolerance(self, dtype: torch.dtype) -> float:
        """The re-anchoring tolerance for a state of ``dtype``."""
        return self.anchor_tol if self.anchor_tol is not None else ANCHOR_TOL.get(dtype, 1e-2)

    def plan_for(
        self, stage: OdeStage, dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> AnchorPlan:
        """:meth:`plan`, tightened by what the stage measured (see the module docstring)."""
        plan = self.plan(stage.program, stage.depth, dtype)
        if not self._measures(stage):
            return plan
        measured = _measured(stage).get(self._key(stage, dtype, device))
        return _denser(plan, measured.every if measured else None, stage.depth)

    def _measures(self, stage: OdeStage) -> bool:
        return self.measure_anchors and self.anchor_every is None and stage.kind in EXACT_KINDS

    def _key(self, stage: OdeStage, dtype: torch.dtype, device: torch.device | str) -> _Key:
        return (stage.depth, dtype, torch.device(device).type, self.tolerance(dtype))

    def run(
        self, stage: OdeStage, state: State, ctx: RunContext, tracker: FiniteTracker | None
    ) -> State:
        tables = ctx.tables if ctx.tables is not None else stage.tables()
        dtype, device = _precision(state), state[0].device
        key = self._key(stage, dtype, device) if self._measures(stage) else None
        measure = (
            key is not None
            and not torch.compiler.is_compiling()  # torch.export traces: nothing to sync
            and (key not in _measured(stage) or key in _rechecks(stage))
        )
        group = _collective_group(tables) if key is not None else None
        if group is not None and not torch.compiler.is_compiling():  # every rank, or none
            measure = _agree_max([float(measure)], group, device)[0] > 0
        cfg = _Config(
            stage=stage,
            tables=tables,
            ctx=ctx,
            n_state=len(state),
            plan=self.plan_for(stage, dtype, device),
            tracker=tracker,
            check_tol=(tol := inverse_tolerance(stage.check_inverse)),
            sketch=tol is None and stage.kind in EXACT_KINDS and sketch_enabled(stage),
            key=key,
            measure=measure,
            group=group,
            anchor_tol=self.tolerance(dtype),
            precision=dtype,
            forward=ForwardRecord.of(stage, tables),
        )
        return tuple(_InvertFunction.apply(cfg, *state, *tables.params))

    def __str__(self) -> str:
        return (
            "invert" if self.anchor_every is None else f"invert(anchor_every={self.anchor_every})"
        )


_Key = tuple[int, torch.dtype, str, float]
_MEASURED = "_anchor_measured"  # stage.__dict__ entries: not parameters, not in state_dict
_RECHECK = "_anchor_recheck"
_WARNED_DENSE = "_anchor_dense_warned"
_WARNED_RECOMPUTE = "_anchor_recompute_warned"


class _Measured(NamedTuple):
    """What a measuring call found: the spacing (``None``: the plan suffices) and the drift
    it aimed at (backwards compare against the same)."""

    every: int | None
    aim: float


def _measured(stage: OdeStage) -> dict[_Key, _Measured]:
    """Measurements by (depth, dtype, device type, tolerance)."""
    return stage.__dict__.setdefault(_MEASURED, {})


def _rechecks(stage: OdeStage) -> set[_Key]:
    """Keys whose last backward saw the drift grow: their next call measures again (per key:
    one flag for the stage let a depth the stage alternates with clear another's)."""
    return stage.__dict__.setdefault(_RECHECK, set())


def _precision(state: State) -> torch.dtype:
    """The dtype whose rounding bounds a reconstruction: the state's, or under autocast the
    narrower dtype the residuals compute in (a float32 state rebuilt through bfloat16
    residuals meets bfloat16 rounding wherever an input lands on the other side of a
    rounding boundary; measured against float32's tolerance, that put anchors at every
    layer). Tolerances, anchor aims and drift warnings are that dtype's."""
    dtype, device = state[0].dtype, state[0].device.type
    if dtype != torch.float64 and torch.is_autocast_enabled(device):  # autocast keeps float64
        narrow = torch.get_autocast_dtype(device)
        if torch.finfo(narrow).eps > torch.finfo(dtype).eps:
            return narrow
    return dtype


class _Targets(NamedTuple):
    """Drift levels for one tolerance and dtype: what a measured spacing aims for, above what
    a backward makes the next call re-measure, and above what it recomputes a segment (the
    tolerance itself, unless the dtype's rounding floor lifts all three)."""

    aim: float
    recheck: float
    recompute: float


def _targets(tol: float, dtype: torch.dtype, aim: float | None = None) -> _Targets:
    """From the tolerance, or from the ``aim`` a measurement settled on."""
    if aim is None:
        aim = max(tol / MEASURE_MARGIN, MEASURE_FLOOR_EPS * torch.finfo(dtype).eps)
    return _Targets(aim, aim * MEASURE_MARGIN * RECHECK_FRACTION, aim * MEASURE_MARGIN)


def _recompute_cap(cfg: _Config) -> float:
    """The largest anchor drift a backward accepts, whatever the measurement lifted its aim
    to: the drift check's tolerance, or the dtype's own floor where that is higher (bfloat16
    residuals under autocast)."""
    floor = _targets(cfg.anchor_tol, cfg.precision).recompute
    return max(exact_drift_tolerance(cfg.precision), floor)


def forget_measurements(stage: OdeStage, *_: object) -> None:
    """Drop what the stage measured, so its next gradient-taking call measures again (a
    ``load_state_dict`` post-hook: new weights may amplify rounding differently)."""
    stage.__dict__.pop(_MEASURED, None)


def _spaced(every: int, depth: int) -> AnchorPlan:
    """An anchor every ``every`` layers (none when that reaches past the last layer)."""
    return AnchorPlan(every, (depth - 1) // every) if every < depth else AnchorPlan(None, 0)


def _denser(plan: AnchorPlan, every: int | None, depth: int) -> AnchorPlan:
    if every is None or (plan.every is not None and plan.every <= every):
        return plan
    return _spaced(every, depth) if every < depth else plan


def _growth(step: Step) -> float | None:
    if not step.updates:
        return None
    growth = 1.0
    for up in step.updates:
        if isinstance(up, AffineUpdate):
            if up.factor == 0:
                raise ValueError("an update with factor 0 cannot be inverted")
            growth *= max(1.0, 1.0 / abs(up.factor))
    return growth


@dataclass
class _Config:
    """Everything the Function needs besides tensors (one object, not positional args)."""

    stage: OdeStage
    tables: StageTables  # the Function's parameter inputs, fixed for forward and backward
    ctx: RunContext
    n_state: int
    plan: AnchorPlan
    tracker: FiniteTracker | None
    check_tol: float | None
    sketch: bool = False  # estimate the input's drift from a sketch (exact kinds, no full check)
    key: _Key | None = None  # the stage's measurements entry (None: this mode does not measure)
    measure: bool = False  # measure the anchor spacing in this forward, stored under key
    anchor_tol: float = 1e-3
    group: Any = None  # the residuals' process group, when they communicate (measuring agrees)
    autocast: tuple[str, bool, torch.dtype] | None = None
    precision: torch.dtype = torch.float32  # whose rounding bounds the drift (_precision)
    forward: ForwardRecord | None = None  # what the backward restores or checks


class _InvertFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, cfg: _Config, *tensors: Tensor) -> tuple[Tensor, ...]:
        stage, k = cfg.stage, cfg.n_state
        state: State = tensors[:k]
        device = state[0].device.type
        cfg.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        every, anchors = cfg.plan.every, []
        tables = cfg.tables
        layer_sketches: list[Tensor] | None = [] if cfg.measure else None
        with torch.no_grad():
            for n in range(stage.depth):
                if every and n and n % every == 0:
                    anchors.extend(state)
                if layer_sketches is not None:
                    layer_sketches.extend(sketch(state))
                state = stage.run_layer(n, state, cfg.ctx, None, tables)
                if cfg.tracker is not None:
                    cfg.tracker.update(n, state)
            if layer_sketches is not None:
                anchors = _measure(cfg, tensors[:k], state, anchors, layer_sketches)
        true_input = list(tensors[:k]) if cfg.check_tol is not None else []
        sketches = sketch(tensors[:k]) if cfg.sketch else []
        ctx.save_for_backward(*state, *anchors, *true_input, *sketches)
        ctx.cfg = cfg
        return tuple(state)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        cfg: _Config = ctx.cfg
        if torch.is_grad_enabled():  # create_graph=True: a derivative of these grads is wanted
            raise RuntimeError(
                f"stage {cfg.stage.name!r}: invert mode's backward is not differentiable "
                "(create_graph=True: a double backward, a gradient penalty); its gradients "
                "would silently count as constants there. Use backward store or checkpoint(k) "
                "for this stage."
            )
        assert cfg.forward is not None
        cfg.forward.check(cfg.stage, "invert")
        try:
            saved = ctx.saved_tensors
        except RuntimeError as err:  # autograd's version check of the saved output
            if "modified by an inplace operation" not in str(err):
                raise
            raise RuntimeError(
                f"stage {cfg.stage.name!r}: its output was modified in place after the forward "
                "(an in-place op on the stage's result, such as ReLU(inplace=True)); invert "
                "rebuilds the activations from that output, so it must stay as the stage "
                "returned it\n  hint: use the out-of-place op (ReLU(), x = x + ...) after "
                "this stage"
            ) from err
        with cfg.forward.restored(cfg.stage):
            param_grads, input_grads = _walk_back(cfg, saved, grads)
        n_params = len(ctx.needs_input_grad) - 1 - cfg.n_state
        params_out = [
            g if need else None
            for g, need in zip(param_grads, ctx.needs_input_grad[1 + cfg.n_state :], strict=True)
        ]
        assert len(params_out) == n_params
        return (None, *input_grads, *params_out)


def _walk_back(
    cfg: _Config, saved: tuple[Tensor, ...], grads: tuple[Tensor, ...]
) -> tuple[list[Tensor | None], list[Tensor]]:
    """Reconstruct and differentiate layer by layer, from the output down to the input.

    Exact kinds compare the reconstruction with each anchor they meet (the anchors are the
    forward's own states). A drift above the tolerance there means the plan no longer fits
    the weights (they grew since the anchors were measured, or changed since the forward):
    the segment above the anchor is then recomputed from the anchor like ``checkpoint``
    (exact), once warned, and the next call measures again. Only the segment below the first
    anchor (or a stage without anchors) relies on the input sketch, which warns."""
    stage, k = cfg.stage, cfg.n_state
    state: State = tuple(s.detach() for s in saved[:k])
    anchors = _anchors(cfg, saved)
    g = [gr.to(s.dtype) for gr, s in zip(grads, state, strict=True)]
    assert cfg.autocast is not None
    walk = _Walk(stage, cfg.ctx, cfg.tables, cfg.autocast)
    exact = stage.kind in EXACT_KINDS
    probes: list[FiniteProbe] = []
    probe = FiniteProbe()
    restart_drift: list[float] = []  # exact drift where an anchor replaces the reconstruction
    found = _measured(stage).get(cfg.key) if cfg.key is not None else None
    targets = _targets(cfg.anchor_tol, cfg.precision, found.aim if found else None)
    # A measured aim is lifted to what one reconstructed layer already drifts: rounding no
    # anchor removes. Past the drift check's tolerance it is no longer rounding but a walk
    # that does not come back (auxiliary states growing doubly exponentially: gradients 1e75
    # off, silently, behind a memory warning): such segments are recomputed from their
    # anchors, exactly, as checkpoint does.
    limit = min(targets.recompute, _recompute_cap(cfg))
    top, top_g, top_acc = stage.depth, list(g), list(walk.acc)  # the segment's exact end
    with BufferGuard() as guard:
        walk.guard = guard
        for n in reversed(range(stage.depth)):
            step = stage.step_at(n)
            if step.updates:
                state, g = walk.undo_fused(n, step, state, g)
            else:
                probe.add(state)  # an arbitrary inverse may mask a non-finite input
                state, g = walk.undo_recompute(n, step, state, g)
            if n not in anchors:
                continue
            anchor = anchors[n]
            probe.add(state)
            if exact:
                drift = float(relative_drift(state, anchor))  # one sync per anchor
                restart_drift.append(drift)
                recompute = not drift <= limit
                if cfg.group is not None:  # it evaluates residuals: every rank, or none
                    recompute = _agree_max([float(recompute)], cfg.group, state[0].device)[0] > 0
                if recompute:
                    probe = FiniteProbe()  # what the drifted walk saw no longer counts
                    walk.acc = list(top_acc)
                    g = walk.recompute_segment(n, top, anchor, top_g, probe)
                    if limit == targets.recompute:  # else expected, and warned when measured
                        _warn_recomputed(stage, drift, n, top, limit)
            probes.append(probe)
            probe = FiniteProbe()
            state = anchor
            top, top_g, top_acc = n, list(g), list(walk.acc)
    probe.add(state)
    probes.append(probe)
    if not all(p.finite() for p in probes):
        _locate_non_finite(cfg, saved)
    rest = saved[k + cfg.plan.count * k :]  # the true input or its sketch, if kept
    recheck = targets.recheck
    drifted = max(restart_drift, default=0.0) > recheck
    if cfg.check_tol is not None:  # the exact check also raises on a drift at an anchor
        error = max(relative_error(state, rest), max(restart_drift, default=0.0))
        drifted = drifted or not error <= recheck
        report_drift(stage.name, stage.kind, error, cfg.check_tol, cfg.precision)
    elif cfg.sketch:
        drift = estimated_drift(state, rest, saved[:k])
        drifted = drifted or not drift <= recheck
        warn_if_drifted(stage, drift, cfg.precision)
    if cfg.group is not None:
        drifted = _agree_max([float(drifted)], cfg.group, state[0].device)[0] > 0
    if drifted and cfg.key is not None:
        if found is None or found.every != 1:  # an anchor at every layer: nothing denser
            _rechecks(stage).add(cfg.key)
    return walk.acc, g


def _warn_recomputed(stage: OdeStage, drift: float, low: int, high: int, tol: float) -> None:
    """Once per stage, unless drift reports are off (``check_inverse=False``,
    ``ODEDSL_CHECK_INVERSE=0``; the segment is recomputed all the same)."""
    if stage.__dict__.get(_WARNED_RECOMPUTE) or not sketch_enabled(stage):
        return
    stage.__dict__[_WARNED_RECOMPUTE] = True
    warnings.warn(
        InversionDriftWarning(
            f"stage {stage.name!r}: the reconstruction drifted by {drift:.3g} (tolerance "
            f"{tol:.3g}) by the time it reached the anchor at layer {low}, so invert recomputed "
            f"layers {low} to {high - 1} from that anchor instead (exact, as checkpoint); a "
            "stage that measures its anchors measures them again on the next call. Weights "
            "that grew since the anchors were planned do this once; if it repeats, the weights "
            "or the random streams change between forward and backward, and no mode's "
            "gradients are then right. "
            "Further warnings of this kind for this stage are suppressed.",
            stage=stage.name,
            relative_error=drift,
        ),
        stacklevel=4,
    )


def _measure(
    cfg: _Config, inputs: State, output: State, anchors: list[Tensor], sketches: list[Tensor]
) -> list[Tensor]:
    """Measure the anchor spacing this stage needs (module docstring) and return the anchors
    to save: ``anchors`` when the plan suffices, else a replayed forward's denser ones."""
    stage, depth, key = cfg.stage, cfg.stage.depth, cfg.key
    assert key is not None and cfg.autocast is not None
    _rechecks(stage).discard(key)
    before = cfg.plan.every
    finite = all(bool(torch.isfinite(s).all()) for s in output)
    if cfg.group is not None:
        finite = _agree_max([float(not finite)], cfg.group, output[0].device)[0] == 0
    if not finite:
        return anchors  # the forward's own fault, reported by its checks; measure next time
    kept = _anchors(cfg, (*output, *anchors))
    drifts, distances, restart = [], [], depth
    for n, state in _reconstructed(cfg, output, kept):
        drifts.append(layer_drift(state, sketches[n]))
        distances.append(restart - n)
        restart = n if n in kept else restart
    values = torch.stack(drifts).tolist()  # one sync
    one_layer = max((v for d, v in zip(distances, values, strict=True) if d == 1), default=0.0)
    target = _targets(cfg.anchor_tol, cfg.precision).aim
    if math.isfinite(one_layer):
        target = max(target, ONE_LAYER_GROWTH * one_layer)
    crossed = [d for d, v in zip(distances, values, strict=True) if not v <= target]
    found = max(1, min(crossed) - 1) if crossed else None
    known = _measured(stage).get(key)
    every = found if known is None or known.every is None else known.every
    if found is not None and every is not None:
        every = min(found, every)
    if cfg.group is not None:  # the densest spacing any rank keeps (depth + 1: none)
        code = -_agree_max([-float(every or depth + 1)], cfg.group, output[0].device)[0]
        every = int(code) if code <= depth else None
    plan = _denser(cfg.plan, every, depth)
    replay = plan != cfg.plan
    if cfg.group is not None:  # a rank that forgot its measurement replays: all do
        replay = _agree_max([float(replay)], cfg.group, output[0].device)[0] > 0
    if replay:
        cfg.plan = plan
        anchors = _replay_anchors(cfg, inputs, plan)
    anchors, halved = _verify(cfg, inputs, output, anchors, target)
    _measured(stage)[key] = _Measured(cfg.plan.every, target)
    if cfg.plan.every == 1 and before != 1 and depth > 1:
        if halved is not None:  # the verification, not the measured crossing, went to 1
            worst, first = halved
        else:
            first = min(crossed) if crossed else 2
            worst = max(
                (v for d, v in zip(distances, values, strict=True) if d == first), default=0
            )
        if target * MEASURE_MARGIN > _recompute_cap(cfg):  # not even one layer comes back
            _warn_dense(stage, one_layer, 1, target, cfg.precision, recomputes=True)
        else:
            _warn_dense(stage, worst, first, target, cfg.precision)
    return anchors


def _verify(
    cfg: _Config, inputs: State, output: State, anchors: list[Tensor], aim: float
) -> tuple[list[Tensor], tuple[float, int] | None]:
    """Reconstruct once more with the anchors to keep, comparing at each anchor and at the
    true input (the measuring call has it), and halve the spacing while a segment drifts past
    the re-measure level. The measuring walk restarts only at the anchors it had, so growth
    near the input was sampled only far from a restart: a spacing measured there could be
    too wide near the input, where no backward can recompute, and took several calls of
    re-measuring to tighten (tied momentum, ×400 weights). Also returns the drift and segment
    length of the last halving (``None``: none), which the every-layer warning quotes."""
    depth, limit = cfg.stage.depth, _targets(cfg.anchor_tol, cfg.precision, aim).recheck
    halved: tuple[float, int] | None = None
    while True:
        worst = _worst_segment_drift(cfg, inputs, output, anchors)
        if cfg.group is not None:
            worst = _agree_max([worst], cfg.group, inputs[0].device)[0]
        if worst <= limit or cfg.plan.every == 1 or depth == 1:
            return anchors, halved
        spacing = cfg.plan.every or depth
        halved = (worst, spacing)
        cfg.plan = _spaced(max(1, spacing // 2), depth)
        anchors = _replay_anchors(cfg, inputs, cfg.plan)


def _worst_segment_drift(
    cfg: _Config, inputs: State, output: State, anchors: list[Tensor]
) -> float:
    """The largest exact drift of a gradient-free reconstruction where it meets an anchor or
    the input (NaN: inf)."""
    kept = _anchors(cfg, (*output, *anchors))
    drifts = [
        relative_drift(state, kept.get(n, inputs))
        for n, state in _reconstructed(cfg, output, kept)
        if n in kept or n == 0
    ]
    return float(torch.stack(drifts).max())


def _reconstructed(
    cfg: _Config, output: State, kept: dict[int, State]
) -> Iterator[tuple[int, State]]:
    """Each layer's input, reconstructed from ``output`` without grad (same random streams,
    buffers guarded), from the last layer down; after layer ``n``'s the walk goes on from the
    anchor ``kept[n]``, where there is one. The measuring walks and the non-finite locator."""
    stage = cfg.stage
    assert cfg.autocast is not None
    walk = _Walk(stage, cfg.ctx, cfg.tables, cfg.autocast)
    state = output
    with torch.no_grad(), BufferGuard() as guard:
        walk.guard = guard
        for n in reversed(range(stage.depth)):
            state = walk.reconstruct(n, stage.step_at(n), state)
            yield n, state
            state = kept.get(n, state)


def _warn_dense(
    stage: OdeStage,
    drift: float,
    layers: int,
    target: float,
    dtype: torch.dtype,
    recomputes: bool = False,
) -> None:
    """Once per stage: measured anchors at every layer cost store's memory (and more time);
    ``recomputes``: even one layer does not come back, so each is recomputed from its anchor."""
    if stage.__dict__.get(_WARNED_DENSE):
        return
    stage.__dict__[_WARNED_DENSE] = True
    where = (
        f"a drift of {drift:.3g} after {layers} layer{'s' if layers > 1 else ''} in "
        f"{str(dtype).removeprefix('torch.')}"
    )
    if recomputes:
        text = (
            f"stage {stage.name!r}: its inverse does not reconstruct even one layer within the "
            f"drift tolerance ({where}), so invert keeps the state of every layer and "
            "recomputes each layer from it (exact, as checkpoint(1)): the memory of store and "
            "more time than checkpoint(1). Use backward checkpoint(1) or store for this stage."
        )
    else:
        text = (
            f"stage {stage.name!r}: its inverse grows rounding so fast ({where}; the anchors "
            f"aim at {target:.3g}) that invert now keeps the state of every layer: the memory "
            "of store, and more time. Use backward store for this stage, or a looser "
            "Invert(anchor_tol=...) if that drift is acceptable."
        )
    warnings.warn(AnchorWarning(text, stage=stage.name), stacklevel=6)


def _collective_group(tables: StageTables) -> Any:
    """The process group the stage's residuals communicate over in training (a
    ``SyncBatchNorm``, torch's or :mod:`odedsl.parallel`'s, over more than one process), else
    ``None``. The SyncBatchNorms are found once per tree (:class:`StageTables`), not per call."""
    if not tables.sync_norms or not (dist.is_available() and dist.is_initialized()):
        return None
    for m in tables.sync_norms:
        if m.training:
            group = getattr(m, "process_group", None) or dist.group.WORLD
            if dist.get_world_size(group) > 1:
                return group
    return None


def _agree_max(values: list[float], group: Any, device: torch.device) -> list[float]:
    """The element-wise maximum of ``values`` over ``group`` (one all-reduce)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t.tolist()


def _replay_anchors(cfg: _Config, inputs: State, plan: AnchorPlan) -> list[Tensor]:
    """The states at every ``plan.every``-th layer, from a gradient-free replay of the forward
    (same random streams; buffers restored, so statistics are updated once)."""
    stage, every = cfg.stage, plan.every
    assert every is not None
    anchors: list[Tensor] = []
    state = inputs
    with BufferGuard() as guard:
        for n in range(plan.count * every):
            state = stage.run_layer(n, state, cfg.ctx, guard, cfg.tables)
            if (n + 1) % every == 0:
                anchors.extend(state)
    return anchors


def _anchors(cfg: _Config, saved: tuple[Tensor, ...]) -> dict[int, State]:
    k, every = cfg.n_state, cfg.plan.every
    return {
        (j + 1) * every: tuple(saved[k + j * k : k + (j + 1) * k])  # type: ignore[operator]
        for j in range(cfg.plan.count)
    }


def _locate_non_finite(cfg: _Config, saved: tuple[Tensor, ...]) -> None:
    """The slow path, run only when the backward produced a non-finite state: reconstruct
    again (no grad, same seeds and buffers) checking every layer, raise naming the first bad
    one. Returns quietly if none is found (a finite sum that overflowed)."""
    stage, k = cfg.stage, cfg.n_state
    assert cfg.autocast is not None
    if not all(bool(torch.isfinite(s).all()) for s in saved[:k]):
        raise NumericalFault(
            f"stage {stage.name!r}: non-finite value (NaN/Inf) in the stage output: the "
            "forward pass produced it (invert keeps no layer states to say at which layer)",
            stage=stage.name,
            hint="ODEDSL_CHECK_FORWARD=1 (or check_forward=True) names the layer; "
            + NON_FINITE_HINTS["forward state"],
        )
    tracker = FiniteTracker(stage.name, "state reconstructed by invert backward")
    output: State = tuple(s.detach() for s in saved[:k])
    for n, state in _reconstructed(cfg, output, _anchors(cfg, saved)):
        tracker.update(n, state)
    tracker.check()


def _leaf(s: Tensor, grad: bool) -> Tensor:
    """``s`` as a leaf of the next VJP: reused when it already is one (with the right flag)."""
    if s.is_leaf and s.requires_grad == grad:
        return s
    return s.detach().requires_grad_(grad)


class _Walk:
    """Per-backward bookkeeping: parameter gradient accumulators, the buffer guard, and the
    forward's autocast settings, re-entered around every residual evaluation (not around the
    VJPs, which autograd runs in the dtypes the recomputation recorded)."""

    def __init__(
        self,
        stage: OdeStage,
        ctx: RunContext,
        tables: StageTables,
        autocast: tuple[str, bool, torch.dtype],
    ) -> None:
        self.stage, self.ctx, self.tables, self.params = stage, ctx, tables, tables.params
        self.autocast = autocast
        device, enabled, dtype = autocast
        self._amp_current = torch.is_autocast_enabled(device) == enabled and (
            not enabled or torch.get_autocast_dtype(device) == dtype
        )
        self.acc: list[Tensor | None] = [None] * len(self.params)
        self.guard: BufferGuard | None = None
        self.memo = ResidualMemo()

    def _call(
        self,
        n: int,
        scope: int,
        touched: set[SlotKey] | None,
        memo: bool = False,
        reverse: bool = False,
    ) -> LayerCall:
        return LayerCall(
            self.stage,
            n,
            self.ctx,
            scope,
            touched,
            self.guard,
            self.tables,
            self.memo if memo else None,
            keep=touched is not None,
            reverse=reverse,
        )

    def _amp(self) -> AbstractContextManager[object]:
        """The forward's autocast state; no context at all when it is already current."""
        if self._amp_current:
            return contextlib.nullcontext()
        device, enabled, dtype = self.autocast
        return torch.autocast(device, dtype=dtype, enabled=enabled)

    def _params_of(self, touched: set[SlotKey]) -> list[int]:
        params = self.params
        return [i for i in self.tables.indices_of(touched) if params[i].requires_grad]

    def _vjp(
        self, outs: list[Tensor], leaves: list[Tensor], touched: set[SlotKey], gouts: list[Tensor]
    ) -> list[Tensor | None]:
        """Grads w.r.t. ``leaves`` (returned) and touched parameters (accumulated)."""
        return self._grads(outs, leaves, self._params_of(touched), gouts)

    def _grads(
        self, outs: list[Tensor], leaves: list[Tensor], pidx: list[int], gouts: list[Tensor]
    ) -> list[Tensor | None]:
        """Grads w.r.t. ``leaves`` (returned) and parameters ``pidx`` (accumulated)."""
        pairs = [
            (o, go if go.dtype == o.dtype else go.to(o.dtype))
            for o, go in zip(outs, gouts, strict=True)
            if o.requires_grad
        ]
        if not pairs:
            return [None] * len(leaves)
        got = torch.autograd.grad(
            [o for o, _ in pairs],
            [*leaves, *(self.params[i] for i in pidx)],
            [go for _, go in pairs],
            allow_unused=True,
        )
        for i, gr in zip(pidx, got[len(leaves) :], strict=True):
            if gr is not None:
                self.acc[i] = gr if self.acc[i] is None else self.acc[i] + gr
        return list(got[: len(leaves)])

    def undo_fused(
        self, n: int, step: Step, state: State, g: list[Tensor]
    ) -> tuple[State, list[Tensor]]:
        """Undo ``step.updates`` in reverse; one increment evaluation per update."""
        h, t = self.stage.h, self.stage.time_at(n)
        cur, g = list(state), list(g)
        assert step.updates is not None
        for u in reversed(range(len(step.updates))):
            up = step.updates[u]
            if not isinstance(up, AffineUpdate):
                cur[up.a], cur[up.b] = cur[up.b], cur[up.a]
                g[up.a], g[up.b] = g[up.b], g[up.a]
                continue
            tgt, factor = up.target, up.factor
            others = [i for i in range(len(cur)) if i != tgt]
            leaves = [_leaf(s, i != tgt) for i, s in enumerate(cur)]
            touched: set[SlotKey] = set()
            call = self._call(n, u + 1, touched)
            with torch.enable_grad(), self._amp():
                e = up.increment(tuple(leaves), call, h, t)
            with torch.no_grad():
                old = cur[tgt] - e if factor == 1.0 else (cur[tgt] - e) / factor
                if old.dtype != cur[tgt].dtype:
                    old = old.to(cur[tgt].dtype)
            got = self._vjp([e], [leaves[i] for i in others], touched, [g[tgt]])
            for i, gr in zip(others, got, strict=True):
                if gr is not None:
                    g[i] = g[i] + gr
            if factor != 1.0:
                g[tgt] = g[tgt] * factor
            cur[tgt] = old
            for i in others:
                cur[i] = leaves[i]
        return tuple(cur), g

    def undo_recompute(
        self, n: int, step: Step, state: State, g: list[Tensor]
    ) -> tuple[State, list[Tensor]]:
        """Reconstruct the layer input with ``step.inverse``, recompute ``step.forward``.

        The inverse takes residual values the previous recomputation kept when they match
        (:class:`ResidualMemo`: same weights, same input tensor), and this recomputation keeps
        its own for the next layer."""
        stage, h, t = self.stage, self.stage.h, self.stage.time_at(n)
        assert step.inverse is not None, f"stage {stage.name!r}: step without inverse"
        with torch.no_grad(), self._amp():
            prev = step.inverse(state, self._call(n, 0, None, memo=True, reverse=True), h, t)
            prev = keep_dtypes(prev, state)
        leaves = [p.detach().requires_grad_() for p in prev]
        touched: set[SlotKey] = set()
        call = self._call(n, 0, touched, memo=True)
        with torch.enable_grad(), self._amp():
            out = keep_dtypes(step.forward(tuple(leaves), call, h, t), prev)
        self.memo.advance()
        got = self._vjp(list(out), leaves, touched, g)
        new_g = [
            gr if gr is not None else torch.zeros_like(p) for gr, p in zip(got, prev, strict=True)
        ]
        return prev, new_g

    def recompute_segment(
        self, low: int, high: int, anchor: State, g_high: list[Tensor], probe: FiniteProbe
    ) -> list[Tensor]:
        """Layers ``low .. high - 1`` forward from the exact ``anchor`` with grad, then their
        VJP with ``g_high`` (parameter grads accumulated): ``checkpoint`` for one segment,
        when reconstructing it drifted. Returns the gradient at the anchor."""
        self.memo = ResidualMemo()  # values of the drifted walk must not be reused
        leaves = [s.detach().requires_grad_() for s in anchor]
        cur: State = tuple(leaves)
        with torch.enable_grad(), self._amp():
            for n in range(low, high):
                cur = self.stage.run_layer(n, cur, self.ctx, self.guard, self.tables)
        probe.add(cur)
        idx = [i for i, p in enumerate(self.params) if p.requires_grad]
        got = self._grads(list(cur), leaves, idx, g_high)
        return [
            gr if gr is not None else torch.zeros_like(s) for gr, s in zip(got, anchor, strict=True)
        ]

    def reconstruct(self, n: int, step: Step, state: State) -> State:
        """Layer ``n``'s input from its output, no VJP (the non-finite locator's walk)."""
        h, t = self.stage.h, self.stage.time_at(n)
        with self._amp():
            if not step.updates:
                assert step.inverse is not None
                call = self._call(n, 0, None, reverse=True)
                return keep_dtypes(step.inverse(state, call, h, t), state)
            cur = list(state)
            for u in reversed(range(len(step.updates))):
                up = step.updates[u]
                if isinstance(up, AffineUpdate):
                    e = up.increment(tuple(cur), self._call(n, u + 1, None), h, t)
                    old = cur[up.target]
                    cur[up.target] = ((old - e) / up.factor).to(old.dtype)
                else:
                    cur[up.a], cur[up.b] = cur[up.b], cur[up.a]
        return tuple(cur)
