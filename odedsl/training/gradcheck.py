"""Gradient error of each stage's backward mode against ``store``, in float64.

The spec is compiled twice, once with every stage in ``store`` mode (the reference) and once
with the modes under test, with the same state dict, the same random batch and the same random
loss ``sum(w · out)``. Both run in **train mode** on that identical batch, after the same
``torch.manual_seed``: BatchNorm then normalises with identical batch statistics in both, and
dropout draws identical masks, so the only difference left is the backward mode. (Eval mode,
``eval_mode=True``, makes BatchNorm a fixed affine map instead; the errors are similar.)

``init`` decides the weights, since the spec's zero-residual initialisation (a last BatchNorm
scale of 0) makes every residual vanish and every inverse trivially exact:

* ``spec``: the compiled initialisation, untouched;
* ``random`` (default): every layer redrawn by its own ``reset_parameters``, normalisation
  scales from U(0.5, 1.5) and shifts from N(0, 0.1²), so residuals are O(1) and independent
  from layer to layer;
* ``smooth``: as ``random`` outside the stages; inside, each residual's slots interpolate
  linearly in depth between two random endpoints (weights smooth in depth, the setting of
  seed 000's Prop. 5 and 6, where Heun's reverse scheme gains an order over Euler's).

For invert stages the reconstruction error of the stage input is also reported: run the stage
forward from its true input, then the derived inverse step layer by layer back to layer 0 (no
anchors: the raw inverse's drift). So is the number of anchors the invert backward kept in the
checked run (planned from the integrator's factors, or measured: ``odedsl.runtime.invert``),
each one state of memory.
"""

from __future__ import annotations

import copy
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from odedsl.diagnostics import Diagnostic, DslError, did_you_mean
from odedsl.integrators.library import standard_library
from odedsl.limits import Limits
from odedsl.runtime import ApproximateGradientWarning, OdeStage, Store
from odedsl.runtime.calls import LayerCall, RunContext, keep_dtypes
from odedsl.runtime.guard import relative_error
from odedsl.runtime.program import AffineUpdate, State
from odedsl.runtime.replay import BufferGuard
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec, looks_like_path
from odedsl.spec.validate import ValidatedSpec, validate
from odedsl.syntax import ast
from odedsl.syntax.imports import LoadedModule, load_with_imports, read_spec_file

INITS = ("spec", "random", "smooth")
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class StageError:
    """One stage (or ``all`` parameters) at one depth: how far its gradient is from store's.

    A stage's ``grad_error`` is that of its own backward mode: its parameters' gradients with
    it in its mode and every other stage in ``store``. (It was measured with every stage in
    its mode, so a ``store`` stage before an approximate one showed the later stage's error
    as its own.) The ``all`` row has the whole network in its modes."""

    stage: str
    integrator: str
    backward: str
    inverse: str
    depth: int
    grad_error: float
    grad_norm: float
    parameters: int
    reconstruction_error: float | None = None
    anchors: int | None = None  # states invert kept besides its output (None: not invert)

    def to_json(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v


def stages_of(model: nn.Module) -> list[tuple[str, OdeStage]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, OdeStage)]


def _seed_of(seed: int, *parts: object) -> int:
    """A seed from ``seed`` and names, stable across runs and depths (no ``hash()``)."""
    return seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())


@torch.no_grad()
def _redraw(module: nn.Module, seed: int) -> None:
    """Draw ``module``'s parameters afresh under a private seed: layers by their own
    ``reset_parameters``, normalisation scales from U(0.5, 1.5) and shifts from N(0, 0.1²)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            weight = getattr(sub, "weight", None)
            if isinstance(sub, NORMS):
                if isinstance(weight, Tensor):
                    weight.copy_(0.5 + torch.rand_like(weight))
                bias = getattr(sub, "bias", None)
                if isinstance(bias, Tensor):
                    bias.copy_(0.1 * torch.randn_like(bias))
            elif hasattr(sub, "reset_parameters") and next(sub.parameters(False), None) is not None:
                sub.reset_parameters()


@torch.no_grad()
def perturb(model: nn.Module, init: str, seed: int) -> None:
    """Apply ``init`` (see the module doc) in place. Every draw is keyed by the module's
    name (and slot), not by construction order, so the same spec at depths N and 2N shares
    its stem and head, and under ``smooth`` discretises the same weights θ(s), s ∈ [0, 1]."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
    if init == "spec":
        return
    for name, child in model.named_children():
        if not isinstance(child, OdeStage):
            _redraw(child, _seed_of(seed, name))
    for name, stage in stages_of(model):
        for r in stage.program.residuals:
            slots = stage.residual_modules(r)
            if init == "random" or len(slots) == 1:
                for j, module in enumerate(slots):
                    _redraw(module, _seed_of(seed, name, r, j))
                continue
            ends = [copy.deepcopy(slots[0]) for _ in range(2)]
            for end, module in zip(("start", "end"), ends, strict=True):
                _redraw(module, _seed_of(seed, name, r, end))
            first, last = (dict(m.named_parameters()) for m in ends)
            for j, module in enumerate(slots):
                s = j / (len(slots) - 1)
                for k, p in module.named_parameters():
                    p.copy_((1 - s) * first[k] + s * last[k])


def _norm(tensors: Sequence[Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))  # type: ignore[arg-type]


def _relative(got: Sequence[Tensor], ref: Sequence[Tensor]) -> tuple[float, float]:
    if not ref:
        return 0.0, 0.0
    num = _norm([g - r for g, r in zip(got, ref, strict=True)])
    den = _norm(ref)
    if den == 0.0:
        return (0.0 if num == 0.0 else float("inf")), 0.0
    return num / den, den


def _grads(model: nn.Module, x: Tensor, w: Tensor, seed: int) -> dict[str, Tensor]:
    torch.manual_seed(seed)
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    loss = (model(x) * w).sum()
    got = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {
        k: (g if g is not None else torch.zeros_like(p))
        for (k, p), g in zip(named, got, strict=True)
    }


def undo_layer(stage: OdeStage, n: int, state: State, ctx: RunContext, guard: BufferGuard) -> State:
    """Layer ``n``'s derived inverse: ``step.inverse``, or its exact updates undone in reverse
    (when it has no ``inverse``, or when the stage is stochastic: its random streams are
    keyed per update, as the forward drew them)."""
    step, h, t = stage.step_at(n), stage.h, stage.time_at(n)
    if step.inverse is not None and not (ctx.seed is not None and step.updates):
        return keep_dtypes(
            step.inverse(state, LayerCall(stage, n, ctx, 0, None, guard, reverse=True), h, t),
            state,
        )
    assert step.updates is not None, f"stage {stage.name!r}: a step without inverse"
    cur = list(state)
    for u in reversed(range(len(step.updates))):
        up = step.updates[u]
        if isinstance(up, AffineUpdate):
            e = up.increment(tuple(cur), LayerCall(stage, n, ctx, u + 1, None, guard), h, t)
            cur[up.target] = (cur[up.target] - e) / up.factor
        else:
            cur[up.a], cur[up.b] = cur[up.b], cur[up.a]
    return keep_dtypes(tuple(cur), state)


@torch.no_grad()
def reconstruction_error(stage: OdeStage, x: Tensor, seed: int = 0) -> float:
    """‖x̂₀ − x₀‖/‖x₀‖: forward N layers from ``x``'s state, then N inverse steps back."""
    ctx = RunContext(seed if stage.stochastic else None)
    with BufferGuard() as guard:
        start = stage.program.init_state(x)
        state = start
        for n in range(stage.depth):
            state = stage.run_layer(n, state, ctx, guard)
        for n in reversed(range(stage.depth)):
            state = undo_layer(stage, n, state, ctx, guard)
    return relative_error(state, start)


def _stage_inputs(model: nn.Module, x: Tensor, seed: int) -> dict[str, Tensor]:
    probe = copy.deepcopy(model)
    seen: dict[str, Tensor] = {}
    hooks = [
        stage.register_forward_pre_hook(lambda _m, args, name=name: seen.setdefault(name, args[0]))
        for name, stage in stages_of(probe)
    ]
    torch.manual_seed(seed)
    with torch.no_grad():
        probe(x)
    for h in hooks:
        h.remove()
    return seen


def compare(
    ref: fx.GraphModule,
    test: fx.GraphModule,
    *,
    depth: int,
    batch: int = 4,
    seed: int = 0,
    eval_mode: bool = False,
) -> list[StageError]:
    """Per-stage and overall gradient errors of ``test`` against ``ref`` (same weights)."""
    with warnings.catch_warnings():  # the error it warns of is what is measured here
        warnings.simplefilter("ignore", ApproximateGradientWarning)
        return _compare(ref, test, depth=depth, batch=batch, seed=seed, eval_mode=eval_mode)


def _compare(
    ref: fx.GraphModule,
    test: fx.GraphModule,
    *,
    depth: int,
    batch: int,
    seed: int,
    eval_mode: bool,
) -> list[StageError]:
    gen = torch.Generator().manual_seed(seed)
    dtype = next(ref.parameters()).dtype
    x = torch.randn(batch, *ref.input_shape, generator=gen, dtype=torch.float64).to(dtype)
    ref.train(not eval_mode)
    test.train(not eval_mode)
    with torch.no_grad():
        probe = copy.deepcopy(ref)
        out = probe(x)
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype)
    g_ref = _grads(ref, x, w, seed + 1)
    g_test = _grads(test, x, w, seed + 1)
    inputs = _stage_inputs(test, x, seed + 1)
    rows: list[StageError] = []
    stages = stages_of(test)
    recomputing = [n for n, s in stages if not isinstance(s.backward_mode, Store)]
    for name, stage in stages:
        keys = [k for k in g_ref if k.startswith(name + ".")]
        if name not in recomputing:  # store alone is the reference itself
            own = g_ref
        elif recomputing == [name]:  # the only recomputing stage: the network's run is its own
            own = g_test
        else:  # other stages' modes would count here
            alone = copy.deepcopy(ref)
            alone.get_submodule(name).backward_mode = copy.deepcopy(stage.backward_mode)
            own = _grads(alone, x, w, seed + 1)
        err, norm = _relative([own[k] for k in keys], [g_ref[k] for k in keys])
        mode = str(stage.backward_mode)
        recon = reconstruction_error(stage, inputs[name], seed) if mode == "invert" else None
        anchors = stage.anchor_plan(dtype, x.device).count if mode == "invert" else None
        rows.append(
            StageError(
                stage=name,
                integrator=stage.program.name,
                backward=mode,
                inverse=stage.kind,
                depth=depth,
                grad_error=err,
                grad_norm=norm,
                parameters=sum(g_ref[k].numel() for k in keys),
                reconstruction_error=recon,
                anchors=anchors,
            )
        )
    keys = list(g_ref)
    err, norm = _relative([g_test[k] for k in keys], [g_ref[k] for k in keys])
    modes = sorted({r.backward for r in rows}) or ["store"]
    rows.append(
        StageError(
            stage="all",
            integrator=",".join(sorted({r.integrator for r in rows})),
            backward=",".join(modes),
            inverse=",".join(sorted({r.inverse for r in rows})),
            depth=depth,
            grad_error=err,
            grad_norm=norm,
            parameters=sum(g.numel() for g in g_ref.values()),
        )
    )
    return rows


def load_with_integrator(
    source: str | os.PathLike[str],
    integrator: str | None,
    *,
    network: str | None = None,
    **params: Value,
) -> ValidatedSpec:
    """Load a spec with every stage's ``integrator`` clause replaced by ``integrator``
    (its arguments dropped): the same network under another scheme, imports intact."""
    if integrator is None:
        return load_spec(source, network=network, **params)
    limits = Limits.from_env()
    if isinstance(source, os.PathLike) or looks_like_path(str(source)):
        path = Path(source)
        text = read_spec_file(path, limits)
        modules = load_with_imports(text, str(source), path, path.resolve().parent, limits)
    else:
        modules = load_with_imports(str(source), "<spec>", None, Path.cwd(), limits)
    main = modules[0].module
    known = set(standard_library()) | {d.name for m in modules for d in m.module.integrators}
    if integrator not in known:
        # an option's name, not the spec's: located on the clause it replaces, the error had
        # shown `integrator rk4` under "unknown integrator 'rk5'"
        raise DslError(
            [
                Diagnostic(
                    "E200",
                    f"unknown integrator '{integrator}' (the one swapped into every stage)",
                    None,
                    did_you_mean(integrator, known)
                    or f"the integrators are {', '.join(sorted(known))}",
                )
            ]
        )
    networks = tuple(
        replace(net, items=tuple(_swap(item, integrator) for item in net.items))
        for net in main.networks
    )
    modules = [LoadedModule(modules[0].path, replace(main, networks=networks)), *modules[1:]]
    return validate(modules, network=network, overrides=params, limits=limits)


def _swap(item: ast.NetItem, integrator: str) -> ast.NetItem:
    if not isinstance(item, ast.StageDecl):
        return item
    clauses = tuple(
        replace(c, name=integrator, args=()) if c.keyword == "integrator" else c
        for c in item.clauses
    )
    if not any(c.keyword == "integrator" for c in clauses):
        clauses = (ast.Clause(item.span, "integrator", integrator, (), None, None), *clauses)
    return replace(item, clauses=clauses)


def gradient_errors(
    spec: str | os.PathLike[str],
    *,
    overrides: dict[str, Value] | None = None,
    backward: str | None = None,
    integrator: str | None = None,
    init: str = "random",
    batch: int = 4,
    seed: int = 0,
    eval_mode: bool = False,
    network: str | None = None,
) -> list[StageError]:
    """Compile ``spec`` in float64 as ``store`` and as ``backward`` (``None``: each stage's
    own mode), share the weights, and compare gradients (see the module doc)."""
    from odedsl.compiler import compile as compile_spec

    params = dict(overrides or {})
    validated = load_with_integrator(spec, integrator, network=network, **params)
    depth = validated.network.params.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool):
        depth = validated.network.stages[0].depth if validated.network.stages else 0
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left alone
        torch.manual_seed(seed)
        ref = compile_spec(validated, backward="store", dtype=torch.float64)
        test = compile_spec(validated, backward=backward, dtype=torch.float64)
        perturb(ref, init, seed)
        test.load_state_dict(ref.state_dict())
        return compare(ref, test, depth=depth, batch=batch, seed=seed, eval_mode=eval_mode)
