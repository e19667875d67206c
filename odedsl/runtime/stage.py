"""An ODE stage: N layers of an integrator step over residual modules, in any backward mode.

Residual copies live in one ``nn.ModuleList`` per residual name, registered under that name,
so the state dict reads ``<stage>.<residual>.<slot>.<the module's own names>``. The depth loop
is a Python loop over layers (never unrolled into a graph); the backward mode decides how the
loop is differentiated (see :mod:`odedsl.runtime.modes`).

Layer ``n`` runs ``step.forward(state, call, h, t_n)`` with ``t_n = t0 + n h``; ``call`` resolves
offsets against layer ``n`` through the weight schedule. ``step.inverse`` receives the same
``(h, t_n)`` and a call for the same layer, so a reverse-time scheme reads ``f(x_{n+1})`` at
offset 1: θ_n and layer n's dropout mask when the forward reads nothing ahead (Euler, seed 000
eq. 6), θ_{n+1} and the corrector's mask when it does (Heun, eq. 9).

Under ``torch.compile`` the stage is a graph break in every mode (never another mode): its
depth loop runs in Python and each residual evaluation runs one compiled graph per residual
function, reused by all layers, so compile time does not grow with N (see
:mod:`odedsl.runtime.compiled`).
"""

from __future__ import annotations

import contextlib
import linecache
import math
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from odedsl.runtime.calls import LayerCall, RunContext, SlotKey, keep_dtypes
from odedsl.runtime.compiled import StepCompiler
from odedsl.runtime.errors import (
    ApproximateGradientWarning,
    NumericalFault,
    ShardedResidualError,
    TracedStageWarning,
    odedsl_command,
    runtime_name,
)
from odedsl.runtime.guard import FiniteTracker, forward_check_enabled
from odedsl.runtime.invert import AnchorPlan, forget_measurements
from odedsl.runtime.modes import BackwardMode, BackwardSpec, Invert, Store, parse_backward
from odedsl.runtime.program import AffineUpdate, IntegratorProgram, State, Step
from odedsl.runtime.replay import BufferGuard, draw_base_seed
from odedsl.runtime.tables import StageTables
from odedsl.runtime.weights import Blend, WeightSchedule, depth_limit


class OdeStage(nn.Module):
    """N layers of ``program.step`` (layer 0: ``program.first`` if set) from ``init_state``.

    ``backward``: ``"store"``, ``("checkpoint", k)``, ``"invert"`` or a :class:`BackwardMode`.
    ``stochastic``: the residuals draw random numbers (dropout), which every mode then replays
    from one seed per forward. ``check_inverse``: relative tolerance of the invert-mode check
    of the reconstructed input (also ``ODEDSL_CHECK_INVERSE``). ``check_forward``: raise on a
    NaN/Inf state in forward, naming the layer (also ``ODEDSL_CHECK_FORWARD``).
    """

    def __init__(
        self,
        name: str,
        program: IntegratorProgram,
        factories: Mapping[str, Callable[[], nn.Module]],
        depth: int,
        step: float | None = None,
        t0: float = 0.0,
        schedule: WeightSchedule | None = None,
        backward: BackwardSpec = "store",
        stochastic: bool = False,
        check_inverse: float | bool | None = None,
        check_forward: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"stage {name!r}: depth must be a positive integer, got {depth!r}")
        if set(factories) != set(program.residuals):
            raise ValueError(
                f"stage {name!r}: factories for {sorted(factories)} but integrator "
                f"{program.name!r} calls residuals {sorted(program.residuals)}"
            )
        self.name = name
        self.program = program
        self.depth = depth
        self.h = 1.0 / depth if step is None else float(step)
        self._step_given = step is not None
        self.t0 = float(t0)
        self.schedule = schedule or WeightSchedule("tied")
        self._check_groups(depth)
        self.stochastic = stochastic
        self.check_inverse = check_inverse  # validated by the property's setter
        self.check_forward = check_forward
        n_slots = self.schedule.slots(depth, program.offsets)
        for r in program.residuals:
            if hasattr(self, r) or hasattr(nn.Module, r):
                raise ValueError(f"stage {name!r}: residual name {r!r} clashes with an attribute")
            self.add_module(r, nn.ModuleList([factories[r]() for _ in range(n_slots)]))
        self._blends: dict[tuple[int, float], Blend] = {}
        self.backward_mode = backward  # type: ignore[assignment]
        self.register_load_state_dict_post_hook(forget_measurements)

    # ----------------------------------------------------------------- configuration
    @property
    def kind(self) -> str:
        """What the program's inverse promises (``exact``, ``approximate``...)."""
        return self.program.kind

    @property
    def backward_mode(self) -> BackwardMode:
        """How the stage is differentiated: ``store``, ``checkpoint(k)`` or ``invert``. Assign
        one (``stage.backward_mode = "checkpoint(4)"``) to change it; refused with a
        ValueError: ``invert`` for an integrator without inverse, and a mode whose steps fail
        on their coefficients at this depth."""
        return self._mode

    @backward_mode.setter
    def backward_mode(self, spec: BackwardSpec) -> None:
        mode = parse_backward(spec)
        if isinstance(mode, Invert) and self.kind == "none":
            raise ValueError(
                f"stage {self.name!r}: integrator {self.program.name!r} has no inverse, so "
                "backward=invert is not available; use backward store or checkpoint(k)"
            )
        self._check_coefficients(self.depth, self.h, mode)
        self._mode = mode

    def _check_coefficients(self, depth: int, h: float, mode: BackwardMode) -> None:
        """Refuse a depth or backward mode under which some layer's coefficients fail: the
        forward's in every mode, the inverse's under invert. The validator's dry run, asked
        again because ``set_depth`` moves the layer times: a depth with a layer on a
        singularity (``h / (t - 1/2)`` at depth 4) ran, its output silently inf. Exported code
        asks its steps the same (:class:`~odedsl.runtime.program.CoefficientProbe`)."""
        check = self.program.coefficient_check
        if check is None:  # a program assembled by hand, without a check
            return
        forward, inverse = check(h, depth, self.t0)
        if forward is not None:
            raise ValueError(
                f"stage {self.name!r}: integrator {self.program.name!r} fails on its "
                f"coefficients at depth {depth} (h = {h:g}): {forward}; use another depth"
            )
        if inverse is not None and isinstance(mode, Invert):
            raise ValueError(
                f"stage {self.name!r}: the inverse of integrator {self.program.name!r} fails "
                f"on its coefficients at depth {depth} (h = {h:g}): {inverse}; use backward "
                "store or checkpoint(k), which never run the inverse"
            )

    @property
    def step_compiler(self) -> StepCompiler | None:
        """The compiler of residual evaluations set by :func:`~odedsl.runtime.compile_steps`
        (``None``: plain module calls, except inside ``torch.compile``)."""
        return self.__dict__.get("_step_compiler")

    @step_compiler.setter
    def step_compiler(self, compiler: StepCompiler | None) -> None:
        self.__dict__["_step_compiler"] = compiler

    def _compiler_for_run(self, compiling: bool) -> StepCompiler | None:
        compiler = self.step_compiler
        if compiler is None and compiling:
            compiler = self.__dict__.get("_auto_compiler")
            if compiler is None:
                compiler = self.__dict__["_auto_compiler"] = StepCompiler()
        return compiler

    def set_depth(self, depth: int) -> None:
        """Run the same weights at another depth N (step 1/N unless the spec fixed the step).

        Only for schedules whose parameters do not depend on N (``tied``, ``shared(k)`` with
        k ≤ N, ``interpolated(k)``); compiled residual graphs are kept, so nothing recompiles.
        Refused with a ValueError: untied weights, k > N, and a depth at which a layer's
        coefficients fail (a division by ``t - 1/2`` with a layer at t = 1/2).
        """
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"stage {self.name!r}: depth must be a positive integer: {depth!r}")
        if depth > max_depth():
            raise ValueError(
                f"stage {self.name!r}: depth {depth} exceeds the limit of {max_depth()} "
                "(raise it with ODEDSL_MAX_DEPTH)"
            )
        self._check_groups(depth)
        if self.schedule.slots(depth, self.program.offsets) != self.schedule.slots(
            self.depth, self.program.offsets
        ):
            raise ValueError(
                f"stage {self.name!r}: {self.schedule} weights have one slot per layer, so the "
                f"depth cannot change in place; use {runtime_name('expand_state_dict')} to "
                "build a deeper network"
            )
        h = self.h if self._step_given else 1.0 / depth
        self._check_coefficients(depth, h, self._mode)
        self.depth, self.h = depth, h
        self._blends.clear()

    def _check_groups(self, depth: int) -> None:
        """``shared(k)`` needs k ≤ depth, as the spec validator requires (E205): with fewer
        layers than groups some groups are never read, their weights silently unused."""
        k = self.schedule.k
        if self.schedule.mode == "shared" and k is not None and k > depth:
            raise ValueError(
                f"stage {self.name!r}: shared({k}) has more groups than the stage's {depth} "
                f"layer{'s' if depth != 1 else ''}; use a depth of at least {k}, or fewer groups"
            )

    @property
    def check_inverse(self) -> float | bool | None:
        """Relative tolerance of invert's reconstruction check (``True``: the dtype's default;
        ``False``: off, and no drift sketch; ``None``: ``ODEDSL_CHECK_INVERSE`` decides)."""
        found = self.__dict__
        return found["_check_inverse"] if "_check_inverse" in found else found.get("check_inverse")

    @check_inverse.setter
    def check_inverse(self, value: float | bool | None) -> None:
        # a setter, so that `stage.check_inverse = 0` after construction is refused as the
        # constructor refuses it (it failed later, inside a backward)
        if not _is_check_setting(value):
            raise ValueError(
                f"stage {self.name!r}: check_inverse must be None, True, False or a relative "
                f"tolerance above 0, got {value!r}"
            )
        self.__dict__["_check_inverse"] = value

    @property
    def geometry(self) -> tuple[int, float, float]:
        """Depth, step and start time: what a backward must re-run layers at."""
        return (self.depth, self.h, self.t0)

    @contextlib.contextmanager
    def at_geometry(self, geometry: tuple[int, float, float]) -> Iterator[None]:
        """Depth, step and start time as a forward ran them, while its backward re-runs
        layers (``set_depth`` between a forward and its backward made invert walk the new
        depth: a tied stage's gradients were 53 % off); put back after."""
        if geometry == self.geometry:
            yield
            return
        now = self.geometry
        self.depth, self.h, self.t0 = geometry
        self._blends.clear()
        try:
            yield
        finally:
            self.depth, self.h, self.t0 = now
            self._blends.clear()

    def anchor_plan(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> AnchorPlan:
        """Anchors invert mode keeps for a state of ``dtype`` on ``device`` (none in other
        modes): the planned ones, or the denser spacing a gradient-taking call measured.
        ``device``: by default the stage's parameters' (measurements are kept per device
        type, so a CUDA run read as "cpu" reported the plan instead of what it measured)."""
        if isinstance(self._mode, Invert):
            if device is None:
                first = next(self.parameters(), None)
                device = first.device if first is not None else "cpu"
            return self._mode.plan_for(self, dtype, device)
        return AnchorPlan(None, 0)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, integrator={self.program.name}, depth={self.depth}, "
            f"h={self.h:g}, weights={self.schedule}, backward={self._mode}"
        )

    # ----------------------------------------------------------------- building blocks
    def residual_modules(self, name: str) -> nn.ModuleList:
        """The weight slots of residual ``name``: one module per slot of the schedule."""
        return self.get_submodule(name)  # type: ignore[return-value]

    def blend(self, n: int, c: float) -> Blend:
        key = (n, c)
        if key not in self._blends:
            self._blends[key] = self.schedule.lookup(n, c, self.depth, self.program.offsets)
        return self._blends[key]

    def step_at(self, n: int) -> Step:
        """The step layer ``n`` runs: the program's first step at layer 0, if it has one."""
        return self.program.first if n == 0 and self.program.first else self.program.step

    def time_at(self, n: int) -> float:
        """Layer ``n``'s time ``t0 + n h``."""
        return self.t0 + n * self.h

    def param_list(self) -> list[nn.Parameter]:
        """All residual parameters, in a fixed order (the invert Function's inputs); a copy of
        the cached :meth:`tables` list."""
        return list(self.tables().params)

    def slot_param_indices(self) -> dict[SlotKey, list[int]]:
        """Indices into :meth:`param_list` of each slot's parameters (a copy)."""
        return {k: list(v) for k, v in self.tables().slot_index.items()}

    def tables(self) -> StageTables:
        """Parameter and slot tables, cached; rebuilt when the module tree changed."""
        cached: StageTables | None = self.__dict__.get("_tables")
        if cached is None or not cached.valid():
            cached = StageTables(self)
            self.__dict__["_tables"] = cached
        return cached

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state = dict(state)
        state.pop("_tables", None)  # rebuilt on demand
        return state

    def run_layer(
        self,
        n: int,
        state: State,
        ctx: RunContext,
        guard: BufferGuard | None = None,
        tables: StageTables | None = None,
    ) -> State:
        """Layer ``n`` forward. Stochastic steps with updates run update by update, so the
        random stream of each update is keyed as the fused backward will key it. ``tables``:
        :meth:`tables` validated by the caller for this run (default: ``ctx.tables``; ``None``:
        plain lookups)."""
        step, h, t = self.step_at(n), self.h, self.time_at(n)
        tables = tables if tables is not None else ctx.tables
        try:
            out = self._step(n, step, state, ctx, guard, tables, h, t)
        except ArithmeticError as exc:  # a coefficient of t or h, in Python floats
            raise NumericalFault(
                f"stage {self.name!r}: the integrator's coefficients fail at layer {n} "
                f"(t = {t:g}, h = {h:g}): {exc}",
                stage=self.name,
                layer=n,
                hint="a coefficient divides by zero or overflows at this layer's time; "
                "change the integrator, or the depth or step that puts a layer there",
            ) from None
        return keep_dtypes(out, state)

    def _step(
        self,
        n: int,
        step: Step,
        state: State,
        ctx: RunContext,
        guard: BufferGuard | None,
        tables: StageTables | None,
        h: float,
        t: float,
    ) -> State:
        if ctx.keyed and step.updates:
            new = list(state)
            for u, up in enumerate(step.updates, start=1):
                if isinstance(up, AffineUpdate):
                    call = LayerCall(self, n, ctx, u, None, guard, tables)
                    e = up.increment(tuple(new), call, h, t)
                    new[up.target] = up.factor * new[up.target] + e
                else:
                    new[up.a], new[up.b] = new[up.b], new[up.a]
            return tuple(new)
        return step.forward(state, LayerCall(self, n, ctx, 0, None, guard, tables), h, t)

    def run_layers(
        self,
        state: State,
        start: int,
        stop: int,
        ctx: RunContext,
        guard: BufferGuard | None = None,
        tracker: FiniteTracker | None = None,
        tables: StageTables | None = None,
    ) -> State:
        for n in range(start, stop):
            state = self.run_layer(n, state, ctx, guard, tables)
            if tracker is not None:
                tracker.update(n, state)
        return state

    # ----------------------------------------------------------------- forward
    def new_context(self) -> RunContext:
        """A forward's run context: its random seed, for a stage whose residuals draw."""
        return RunContext(draw_base_seed() if self.stochastic else None)

    def final_state(self, x: Tensor) -> State:
        """The state after the last layer (before ``program.output``).

        Under autocast a stage input made by an autocast op (a stem convolution) arrives in
        16 bits. The state is kept in float32 inside the stage, in every mode (the residuals
        still compute in the autocast dtype), and leaves in its own dtype: in 16 bits an
        increment h·f below the state's resolution is lost (a bfloat16 Euler or Hamiltonian
        stage at N = 512 lost three quarters of its change), and x + e − e ≠ x, which
        made invert's gradients 2–18 % off (invert widened alone until 2026-12-02, so it and
        store trained different networks)."""
        state = self.program.init_state(x)
        dtypes = [s.dtype for s in state]
        if any(d in _HALF for d in dtypes) and torch.is_autocast_enabled(state[0].device.type):
            wide = tuple(s.float() if s.dtype in _HALF else s for s in state)
            out = self._final_state(wide)
            return tuple(o.to(d) for o, d in zip(out, dtypes, strict=True))
        return self._final_state(state)

    def _final_state(self, state: State) -> State:
        if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
            return _eager_run(self, state, True)  # Dynamo tracing: a graph break here
        plain = isinstance(self._mode, Store) and not self.stochastic
        if plain and self.step_compiler is None and not self._checks_forward():
            return self.run_layers(state, 0, self.depth, RunContext(None))
        return _eager_run(self, state, False)

    def forward(self, x: Tensor) -> Tensor:
        """The stage output: ``depth`` layers of the integrator from ``x``'s state, kept for
        the backward as ``backward_mode`` says."""
        return self.program.output(self.final_state(x))

    def _checks_forward(self) -> bool:
        return forward_check_enabled(self.check_forward)


def _is_check_setting(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return True
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


_HALF = (torch.float16, torch.bfloat16)
_GRAPH_BREAK = (
    "an odedsl ODE stage runs its depth loop in Python (one compiled graph per residual "
    "function, reused by every layer, so compile time does not grow with depth); compile "
    "without fullgraph=True so that the stage can be a graph break"
)


@torch.compiler.disable(reason=_GRAPH_BREAK)
def _eager_run(stage: OdeStage, state: State, compiling: bool) -> State:
    """The depth loop, in Python in every mode (a graph break under torch.compile: Dynamo would
    unroll it, and recomputation, random replay and checks must not be traced away); inside
    torch.compile, residual evaluations run compiled."""
    tables = stage.tables()
    tracker = FiniteTracker(stage.name, "forward state") if stage._checks_forward() else None
    needs_grad = torch.is_grad_enabled() and (
        any(s.requires_grad for s in state) or any(p.requires_grad for p in tables.params)
    )
    recomputes = needs_grad and not isinstance(stage.backward_mode, Store)
    ctx = RunContext(
        stage.new_context().seed,
        tables,
        stage._compiler_for_run(compiling),
        {} if recomputes and tables.replayed else None,
    )
    if recomputes:
        if tables.sharded:
            _refuse_sharded(stage, tables.sharded[0])
        if tables.unregistered and isinstance(stage.backward_mode, Invert):
            _refuse_unregistered(stage, tables.unregistered[0])
        if torch.jit.is_tracing():  # an autograd Function with Python state: no TorchScript
            _warn_traced(stage, _TRACE_WHY, _TRACE_HINT)
            needs_grad = False
        elif torch._C._are_functorch_transforms_active():
            _warn_traced(stage, _FUNC_WHY, _FUNC_HINT)  # no functorch rule for either mode
            needs_grad = False
        elif stage.kind == "approximate" and isinstance(stage.backward_mode, Invert):
            _say_approximate(stage)  # (traced, the layers differentiate exactly, as in store)
    if needs_grad:
        state = stage.backward_mode.run(stage, state, ctx, tracker)
    else:
        state = stage.run_layers(state, 0, stage.depth, ctx, tracker=tracker, tables=tables)
    if tracker is not None:
        tracker.check()
    return state


_TRACE_WHY = "torch.jit.trace records its forward operations only"
_TRACE_HINT = (
    "trace under torch.no_grad() for inference or ONNX export; train the untraced module "
    "(or torch.compile it) to keep the mode"
)
_FUNC_WHY = (
    "torch.func transforms (grad, vjp, jacrev, vmap) differentiate plain operations only "
    "(invert's backward and checkpoint's saved-tensor hooks have no functorch rule)"
)
_FUNC_HINT = (
    "for the memory of the stage's mode use loss.backward() or torch.autograd.grad "
    "(functional_call works there); under torch.no_grad() there is no backward to keep"
)


def _refuse_sharded(stage: OdeStage, module: str) -> None:
    """FSDP cannot follow a residual that a stage's own backward re-runs (see
    :class:`ShardedResidualError`): refused before the forward, not found in the gradients."""
    mode = stage.backward_mode
    raise ShardedResidualError(
        f"stage {stage.name!r}: its module {module!r} is sharded by FSDP on its own, but "
        f"backward {mode} re-runs it inside the stage's backward, where FSDP neither gathers "
        "its weights nor reduces their gradients\n  hint: apply fully_shard to the stage (or "
        "a module above it) instead of to its residuals, so the stage's weights are gathered "
        "for its whole forward and backward; or give this stage backward store",
        stage=stage.name,
        module=module,
    )


def _refuse_unregistered(stage: OdeStage, tensor: str) -> None:
    """Invert differentiates a stage's registered parameters only; a weight held as a plain
    tensor attribute (FSDP1's flat-parameter views) would get no gradient, silently."""
    raise ShardedResidualError(
        f"stage {stage.name!r}: {tensor!r} takes gradients but is not a registered parameter "
        "(FullyShardedDataParallel with use_orig_params=False, its default, holds weights so), "
        "and backward invert differentiates registered parameters only: it would get no "
        "gradient\n  hint: wrap with FullyShardedDataParallel(..., use_orig_params=True) or "
        "torch.distributed.fsdp.fully_shard; or give this stage backward checkpoint(k)",
        stage=stage.name,
        module=tensor,
    )


def _say_approximate(stage: OdeStage) -> None:
    """Once per stage: its gradients will be approximate, what they approximate and how to
    measure the error (a user of the API never sees ``odedsl check``'s ``inverse:
    approximate``)."""
    if stage.__dict__.get("_said_approximate"):
        return
    stage.__dict__["_said_approximate"] = True
    warnings.warn(
        ApproximateGradientWarning(
            f"stage '{stage.name}': backward invert rebuilds the states of integrator "
            f"'{stage.program.name}' by its reverse-time scheme (Sander et al. 2022), "
            "so its gradients approximate exact backprop's, with an error that falls with "
            f"the depth\n  hint: measure it with {odedsl_command('odedsl gradcheck SPEC')} "
            "(each stage's error against exact backprop, or compare the gradients with those "
            "of backward store on a batch); for exact gradients use backward checkpoint(k) or "
            "a reversible integrator (midpoint, leapfrog, hamiltonian, reversible_heun, "
            f"momentum); this warning is an {runtime_name('ApproximateGradientWarning')}",
            stage=stage.name,
        ),
        stacklevel=_outside_the_libraries(),
    )


def _outside_the_libraries() -> int:
    """The ``stacklevel`` of the first caller outside odedsl, torch and generated forwards
    (fx's, and a network's that ``odedsl build`` wrote), for :func:`_say_approximate`'s caller
    (the line of the user's forward, not a line of the library; the depth differs between a
    stage called alone and in a network). In a standalone file this runtime is a part of the
    file, whose parent folder was taken for odedsl's: a warning pointed at the outermost
    frame of any script under it."""
    roots = (os.path.dirname(torch.__file__),)
    if __name__.startswith("odedsl."):  # else a standalone file's copy: the file is library
        roots += (os.path.dirname(os.path.dirname(__file__)),)
    frame, level = sys._getframe(2), 2  # level 1: _say_approximate itself
    while frame.f_back is not None and _in_library(frame.f_code, roots):
        frame, level = frame.f_back, level + 1
    return level


def _in_library(code: types.CodeType, roots: tuple[str, ...]) -> bool:
    name = code.co_filename
    if name.startswith(roots) or name.startswith("<eval_with_key>") or name == __file__:
        return True
    return code.co_name == "forward" and linecache.getline(name, 1).startswith(_GENERATED)


#: The first line of every file ``odedsl build`` writes.
_GENERATED = "# Generated by odedsl "


def _warn_traced(stage: OdeStage, why: str, hint: str) -> None:
    """Once per call site: a tracer or transform takes the stage's layers as plain
    operations, so their backward stores every layer whatever the stage's mode."""
    warnings.warn(
        TracedStageWarning(
            f"stage '{stage.name}': {why}, so the backward stores all {stage.depth} layers "
            f"instead of '{stage.backward_mode}'\n  hint: {hint}",
            stage=stage.name,
        ),
        stacklevel=4,
    )


def compile_steps(module: nn.Module, enabled: bool = True, **options: Any) -> nn.Module:
    """Make every ODE stage in ``module`` evaluate its residuals through one compiled graph
    per residual function (:mod:`odedsl.runtime.compiled`), eagerly too; returns ``module``.

    Without this call a stage does the same, with default options (inductor), whenever it runs
    inside ``torch.compile``; call it to choose the options (``backend="aot_eager"``,
    ``mode="max-autotune-no-cudagraphs"``...). ``enabled=False`` removes the setting again.
    Modes with CUDA graphs (``"reduce-overhead"``, ``"max-autotune"``) assume fixed tensor
    addresses, while every layer passes its own weights to the one graph: untested.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"compile_steps takes an nn.Module, got {type(module).__name__}")
    if enabled:
        _check_compile_options(options)
    for stage in module.modules():
        if is_ode_stage(stage):
            stage.step_compiler = StepCompiler(**options) if enabled else None
    return module


def _check_compile_options(options: dict[str, Any]) -> None:
    """Refuse options ``torch.compile`` refuses, now rather than at the first forward (an
    unknown ``mode`` or ``backend`` surfaced as torch's error from inside a training step):
    ``torch.compile`` checks them when it wraps a function, before any tracing."""
    try:
        torch.compile(_identity, **options)
    except TypeError as exc:  # an argument torch.compile does not take
        raise TypeError(f"compile_steps: {exc}") from None
    except Exception as exc:  # torch raises RuntimeError, InvalidBackend, AssertionError...
        raise ValueError(f"compile_steps: {str(exc).splitlines()[0][:300]}") from None


def _identity(x: Tensor) -> Tensor:
    return x


def is_ode_stage(module: object) -> bool:
    """Whether ``module`` is an ODE stage: an :class:`OdeStage`, or a stage of a standalone
    build (``odedsl build --standalone``), whose file carries its own copy of this class, so
    that ``isinstance`` against this one is false. Functions that look for the stages of a
    model ask this (``compile_steps`` had passed a standalone module's stages by, and
    ``odedsl.save_checkpoint`` had written a file without them, silently)."""
    if isinstance(module, OdeStage):
        return True
    return isinstance(module, nn.Module) and any(
        c.__name__ == OdeStage.__name__ and "set_depth" in vars(c) for c in type(module).__mro__
    )


#: ``set_depth``'s limit, read where ``expand_state_dict`` reads it (one implementation).
max_depth = depth_limit
