"""Why invert costs what it costs: arithmetic floor and per-layer fixed overhead.

Two measurements, all timed round-robin with the process CPU clock, one thread:

1. **Arithmetic** at the benchmark's residual size (``--width --hidden --batch``, an Euler
   stage): the per-layer time of a no-grad forward ``F0``, a forward building the graph
   ``F1`` and the backward ``B`` of plain autograd. A mode that recomputes every layer once
   cannot beat ``1 + F0 / (F1 + B)`` against store (exact, fused: one extra no-grad forward)
   nor ``1 + 2 F0 / (F1 + B)`` (approximate: the reverse step evaluates the residual once
   more).
2. **Fixed overhead**: the same stages with a residual so small (width 4, batch 2) that the
   arithmetic vanishes, leaving what each layer costs in Python, dispatch and autograd
   bookkeeping: store, checkpoint(k), invert, invert with the backward NaN probe switched
   off (``odedsl.runtime.invert.FiniteProbe`` replaced by a no-op, nothing else changed: the
   running sum that non-fused steps and anchors feed, one sync per backward),
   and a minimal hand-written ``autograd.Function`` doing the approximate Euler inversion
   with one ``torch.autograd.grad`` per layer (the floor of any per-layer Python design).

3. **Two runtime features, on and off** in one process: the residual memo of approximate
   kinds (:class:`odedsl.runtime.calls.ResidualMemo`, off = its lookups always miss) with tied
   weights, and the drift sketch of exact kinds (off = ``check_inverse=False``): per round,
   store, on and off in a random order; the medians of the paired ratios to store, and in how
   many rounds ``on`` was the faster.

4. **Measured anchors**: an exact stage's first gradient-taking call also measures how fast
   its inverse grows rounding (:mod:`odedsl.runtime.invert`, "Measured anchors"). Per round,
   in a random order: store, a steady invert step, and an invert step made to measure again
   (its stage's measurements cleared first); medians of the ratios to store and of measuring
   over steady.

Usage: ``python -m benchmarks.overhead`` (a few minutes); prints four tables.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import odedsl.runtime.calls as calls_module
import odedsl.runtime.invert as invert_module
from benchmarks.common import (
    RESULTS,
    Case,
    Residual,
    check_split_width,
    configure_threads,
    machine_description,
    machine_tag,
    markdown_table,
    train_step,
    write_json,
)
from benchmarks.modes import INTEGRATORS, build_stage, with_mode
from odedsl.cli.argtypes import (
    MAX_BATCH,
    MAX_STEPS,
    MAX_WIDTH,
    ScriptParser,
    depth_in,
    int_in,
    out_folder,
)


class _NoProbe:
    """Stands in for ``FiniteProbe`` in the invert backward: sums nothing, always finite."""

    def add(self, *_: Any) -> None:
        pass

    def finite(self) -> bool:
        return True


def _patched(owner: Any, attr: str, value: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with ``owner.attr`` replaced by ``value`` (restored after each call)."""

    def run() -> Any:
        real = getattr(owner, attr)
        setattr(owner, attr, value)
        try:
            return fn()
        finally:
            setattr(owner, attr, real)

    return run


def _without_backward_probe(fn: Callable[[], Any]) -> Callable[[], Any]:
    return _patched(invert_module, "FiniteProbe", _NoProbe, fn)


def hand_written_invert(fs: Sequence[nn.Module], h: float) -> Callable[[Tensor], Tensor]:
    """Approximate Euler inversion as a bare Function: the floor of a per-layer design."""
    params = [p for f in fs for p in f.parameters()]

    class Invert(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Tensor, *_: Tensor) -> Tensor:
            with torch.no_grad():
                for f in fs:
                    x = x + h * f(x)
            ctx.save_for_backward(x)
            return x

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, ...]:
            (x,) = ctx.saved_tensors
            grads: list[Tensor] = []
            for f in reversed(fs):
                with torch.no_grad():
                    prev = x - h * f(x)
                prev = prev.detach().requires_grad_()
                with torch.enable_grad():
                    y = prev + h * f(prev)
                got = torch.autograd.grad(y, [prev, *f.parameters()], g)
                g, grads = got[0], list(got[1:]) + grads
                x = prev.detach()
            return (g, *grads)

    return lambda x: Invert.apply(x, *params)


def _rounds(fns: dict[str, Callable[[], Any]], rounds: int) -> list[dict[str, float]]:
    """CPU time of each function, per round, each round in a fresh random order: in a fixed
    order an ablation timed right after the run it ablates (same stage, warm caches) came out
    4–5 % faster even where the ablated code never ran."""
    rng = random.Random(0)
    for fn in fns.values():
        fn()
    out = []
    for _ in range(rounds):
        order = list(fns)
        rng.shuffle(order)
        times = {}
        for k in order:
            start = time.process_time()
            fns[k]()
            times[k] = time.process_time() - start
        out.append(times)
    return out


def _time(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Minimum CPU time over rounds (the least disturbed estimate)."""
    per_round = _rounds(fns, rounds)
    return {k: min(t[k] for t in per_round) for k in fns}


def arithmetic(residual: Residual, depth: int, rounds: int) -> dict[str, float]:
    stage = build_stage("euler", depth, residual, weights="untied", gamma=0.9, seed=0)
    x = residual.input(dtype=torch.float32, device="cpu", seed=0).requires_grad_()

    def nograd() -> None:
        with torch.no_grad():
            stage(x.clone())

    def forward() -> None:
        stage(x.clone())

    def step() -> None:
        train_step(Case("store", "g", stage, stage, lambda: []), x, None)

    t = _time({"F0": nograd, "F1": forward, "step": step}, rounds)
    out = {k: v / depth for k, v in t.items()}
    out["B"] = out["step"] - out["F1"]
    out["floor_exact"] = 1 + out["F0"] / out["step"]
    out["floor_approximate"] = 1 + 2 * out["F0"] / out["step"]
    return out


def fixed_overhead(integrator: str, depth: int, rounds: int) -> dict[str, float]:
    tiny = Residual(width=4, hidden=4, batch=2)
    base = build_stage(integrator, depth, tiny, weights="untied", gamma=0.9, seed=0)
    x = tiny.input(dtype=torch.float32, device="cpu", seed=0).requires_grad_()
    every = max(1, round(math.sqrt(depth)))
    stages = {m: with_mode(base, m, every) for m in ("store", "checkpoint", "invert")}
    fns: dict[str, Callable[[], Any]] = {m: _stepper(s, x) for m, s in stages.items()}
    fns["invert, no backward probe"] = _without_backward_probe(fns["invert"])
    if integrator == "euler":
        fs = list(base.residual_modules("f"))
        hand = hand_written_invert(fs, 1.0 / depth)
        params = nn.ModuleList(fs)
        fns["hand-written Function"] = lambda: train_step(
            Case("hand", "g", params, hand, lambda: []), x, None
        )
    return {k: v / depth for k, v in _time(fns, rounds).items()}


def _stepper(stage: nn.Module, x: Tensor) -> Callable[[], Any]:
    return lambda: train_step(Case("stage", "g", stage, stage, lambda: []), x, None)


def _memo_off(fn: Callable[[], Any]) -> Callable[[], Any]:
    return _patched(calls_module.ResidualMemo, "take", lambda self, key: None, fn)


def features_on_off(
    residual: Residual, depth: int, rounds: int, integrators: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Invert time / store time with each feature on and off (memo: tied approximate kinds;
    sketch: exact kinds)."""
    x = residual.input(dtype=torch.float32, device="cpu", seed=1).requires_grad_()
    out: dict[str, dict[str, float]] = {}
    for integrator in integrators:
        approximate = integrator in ("euler", "heun", "rk4")
        weights = "tied" if approximate else "untied"
        base = build_stage(integrator, depth, residual, weights=weights, gamma=0.9, seed=0)
        store, invert = with_mode(base, "store", 1), with_mode(base, "invert", 1)
        quiet = with_mode(base, "invert", 1)
        quiet.check_inverse = False
        fns: dict[str, Callable[[], Any]] = {
            "store": _stepper(store, x),
            "on": _stepper(invert, x),
            "off": _memo_off(_stepper(invert, x)) if approximate else _stepper(quiet, x),
        }
        on, off = _paired(fns, rounds)
        out[integrator] = {
            "feature": "residual memo" if approximate else "drift sketch",
            "weights": weights,
            "on": statistics.median(on),
            "off": statistics.median(off),
            "on_faster_rounds": sum(a < b for a, b in zip(on, off, strict=True)),
            "rounds": rounds,
        }
    return out


def measuring_cost(
    residual: Residual, depth: int, rounds: int, integrators: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Invert's measuring call and a steady call, each over store, and their ratio."""
    x = residual.input(dtype=torch.float32, device="cpu", seed=2).requires_grad_()
    out: dict[str, dict[str, float]] = {}
    for integrator in integrators:
        base = build_stage(integrator, depth, residual, weights="untied", gamma=0.9, seed=0)
        store, steady = with_mode(base, "store", 1), with_mode(base, "invert", 1)
        fresh = with_mode(base, "invert", 1)
        step = _stepper(fresh, x)

        def measuring(stage: nn.Module = fresh, step: Callable[[], Any] = step) -> None:
            stage.__dict__.pop(invert_module._MEASURED, None)
            step()

        fns = {"store": _stepper(store, x), "steady": _stepper(steady, x), "measuring": measuring}
        per_round = _rounds(fns, rounds)
        plan = steady.anchor_plan(torch.float32)
        out[integrator] = {
            "measuring": statistics.median(t["measuring"] / t["store"] for t in per_round),
            "steady": statistics.median(t["steady"] / t["store"] for t in per_round),
            "measuring_over_steady": statistics.median(
                t["measuring"] / t["steady"] for t in per_round
            ),
            "anchors": plan.count,
            "rounds": rounds,
        }
    return out


def _paired(fns: dict[str, Callable[[], Any]], rounds: int) -> tuple[list[float], list[float]]:
    """Per round, in a fresh random order: ``on`` and ``off`` time over ``store`` time (paired
    ratios; their medians resist this machine's bursts of noise better than minima)."""
    per_round = _rounds(fns, rounds)
    return [t["on"] / t["store"] for t in per_round], [t["off"] / t["store"] for t in per_round]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ScriptParser(prog="python -m benchmarks.overhead", description=__doc__)
    width, rounds = int_in(1, MAX_WIDTH), int_in(1, MAX_STEPS)
    p.add_argument("--width", type=width, default=64)
    p.add_argument("--hidden", type=width, default=128)
    p.add_argument("--batch", type=int_in(1, MAX_BATCH), default=256)
    p.add_argument("--depth", type=depth_in(), default=100)
    p.add_argument("--rounds", type=rounds, default=7)
    p.add_argument(
        "--integrators",
        nargs="+",
        default=["euler", "midpoint", "hamiltonian"],
        choices=INTEGRATORS,
    )
    p.add_argument(
        "--features",
        nargs="+",
        default=["euler", "heun", "rk4", "hamiltonian"],
        choices=INTEGRATORS,
        help="integrators for the on/off table",
    )
    p.add_argument("--feature-depth", type=depth_in(), default=64)
    p.add_argument("--feature-rounds", type=rounds, default=30)
    p.add_argument(
        "--measuring",
        nargs="+",
        default=["hamiltonian", "momentum"],
        choices=INTEGRATORS,
        help="exact integrators for the measuring-call table",
    )
    p.add_argument("--out", type=out_folder, default=RESULTS)
    args = p.parse_args(argv)
    # the fixed-overhead table runs at width 4; the other two at --width
    check_split_width(p, args.width, [*args.features, *args.measuring])
    return args


def main(argv: Sequence[str] | None = None, log: Any = print) -> dict[str, Any]:
    args = parse_args(argv)
    configure_threads(1)
    residual = Residual("mlp", args.width, args.hidden, args.batch)
    a = arithmetic(residual, args.depth, args.rounds)
    log(f"arithmetic per layer, {residual.describe()} (Euler stage, N={args.depth}):")
    log(
        markdown_table(
            [
                "no-grad forward F0",
                "forward F1",
                "backward B",
                "store step",
                "floor exact",
                "floor approximate",
            ],
            [
                [
                    f"{a['F0'] * 1e6:.0f} µs",
                    f"{a['F1'] * 1e6:.0f} µs",
                    f"{a['B'] * 1e6:.0f} µs",
                    f"{a['step'] * 1e6:.0f} µs",
                    f"{a['floor_exact']:.2f}×",
                    f"{a['floor_approximate']:.2f}×",
                ]
            ],
        )
    )
    rows, fixed = [], {}
    for integrator in args.integrators:
        fixed[integrator] = o = fixed_overhead(integrator, args.depth, args.rounds)
        rows += [
            [integrator, k, f"{v * 1e6:.0f} µs", f"{v / o['store']:.2f}×"] for k, v in o.items()
        ]
    log("\nfixed cost per layer (width 4, batch 2: no arithmetic left):")
    log(markdown_table(["integrator", "mode", "per layer", "× store"], rows))
    features = features_on_off(residual, args.feature_depth, args.feature_rounds, args.features)
    where = f"{residual.describe()}, N={args.feature_depth}"
    log(f"\nfeatures on and off, invert time × store ({where}):")
    log(
        markdown_table(
            ["integrator", "weights", "feature", "on", "off", "rounds on faster"],
            [
                [
                    k,
                    v["weights"],
                    v["feature"],
                    f"{v['on']:.2f}×",
                    f"{v['off']:.2f}×",
                    f"{v['on_faster_rounds']}/{v['rounds']}",
                ]
                for k, v in features.items()
            ],
        )
    )
    measuring = measuring_cost(residual, args.feature_depth, args.feature_rounds, args.measuring)
    log(f"\nthe call that measures anchors, and a steady one, × store ({where}):")
    log(
        markdown_table(
            ["integrator", "anchors", "measuring", "steady", "measuring / steady", "rounds"],
            [
                [
                    k,
                    str(v["anchors"]),
                    f"{v['measuring']:.2f}×",
                    f"{v['steady']:.2f}×",
                    f"{v['measuring_over_steady']:.2f}×",
                    str(v["rounds"]),
                ]
                for k, v in measuring.items()
            ],
        )
    )
    payload = {
        "benchmark": "overhead",
        "command": "python -m benchmarks.overhead "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_description("cpu"),
        "residual": residual.describe(),
        "clock": "cpu (minimum over rounds), seconds per layer",
        "arithmetic": a,
        "fixed": fixed,
        "features": features,
        "measuring": measuring,
    }
    write_json(args.out / f"overhead-{machine_tag('cpu')}.json", payload)
    return payload


if __name__ == "__main__":
    main()
