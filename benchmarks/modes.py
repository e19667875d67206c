"""Backward modes of every standard integrator: time, activation memory and gradient error.

For each integrator of odedsl's standard library, one ODE stage with a small residual
function (an MLP by default) at fixed width and batch, at depths N (10, 100, 1000), in the
three backward modes ``store``, ``checkpoint(k)`` (k = round(√N) by default) and ``invert``:

* median train-step time (forward, linear loss, backward), all 27 configurations of a depth
  timed round-robin in one run, reported relative to ``store``;
* activation bytes kept by the forward, relative to ``store``;
* gradient relative error against ``store`` from identical weights, in float64 (what the
  mode's algebra gives: rounding for exact inverses, O(h^p) for approximate ones) and in
  float32 (what training sees).

Usage (from the repository root)::

    python -m benchmarks.modes                 # full: N ∈ {10, 100, 1000}, ~10 min on 2 cores
    python -m benchmarks.modes --quick         # CI sizes, seconds
    python -m benchmarks.modes --depths 10 100 --integrators euler hamiltonian

Writes ``benchmarks/results/modes-<machine>.json`` and ``.png`` (``--out`` to change the
folder). The stage is an :class:`odedsl.runtime.OdeStage` built from the standard library's
program, exactly what ``odedsl.compile`` builds for a ``stage … = ode(N)`` declaration, with
the residual module passed in (so every mode starts from the same weights).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    STEP_FREE,
    Case,
    Clock,
    Residual,
    add_run_options,
    check_split_width,
    configure_threads,
    cuda_step_bytes,
    finish_run_options,
    flat_grads,
    fmt_bytes,
    fmt_err,
    fmt_ratio,
    machine_description,
    markdown_table,
    median,
    plot_groups,
    relative_error,
    result_tag,
    saved_bytes,
    time_round_robin,
    train_step,
    write_json,
    write_partial,
)
from odedsl.cli.argtypes import (
    ScriptParser,
    depth_in,
)
from odedsl.integrators import standard_library
from odedsl.runtime import OdeStage, WeightSchedule
from odedsl.runtime.program import EXACT_KINDS

INTEGRATORS = (
    "euler",
    "heun",
    "rk4",
    "hamiltonian",
    "midpoint",
    "leapfrog",
    "momentum",
    "additive_coupling",
    "reversible_heun",
)
MODES = ("store", "checkpoint", "invert")
# Targets this benchmark reports against (CPU): invert time relative to store.
TARGET_EXACT, TARGET_APPROX, TARGET_FLAT = 1.25, 1.4, 0.02


def build_stage(
    integrator: str,
    depth: int,
    residual: Residual,
    *,
    weights: str,
    gamma: float,
    seed: int,
    scale_step_free: bool = True,
) -> OdeStage:
    """A float32 ``store`` stage of the standard integrator with fresh residual weights
    (scaled by 1/N for the integrators without a step size, see :class:`Scaled`)."""
    decl = standard_library()[integrator]
    params = {"gamma": gamma} if integrator == "momentum" else None
    program = decl.program(params)
    width = residual.width // 2 if decl.split_channels else residual.width
    scale = 1.0 / depth if scale_step_free and integrator in STEP_FREE else None
    torch.manual_seed(seed)
    return OdeStage(
        integrator,
        program,
        {r: (lambda: residual.module(width, scale)) for r in program.residuals},
        depth=depth,
        schedule=WeightSchedule(weights),
        backward="store",
    )


def with_mode(stage: OdeStage, mode: str, every: int) -> OdeStage:
    """A copy of ``stage`` (same weights) in backward ``mode``."""
    out = copy.deepcopy(stage)
    out.backward_mode = ("checkpoint", every) if mode == "checkpoint" else mode  # type: ignore[assignment]
    return out


def stage_case(stage: OdeStage, integrator: str, mode: str) -> Case:
    return Case(
        name=f"{integrator}/{mode}",
        group=integrator,
        module=stage,
        forward=stage,
        grads=lambda: [p.grad for p in stage.parameters()],
        reference=mode == "store",
    )


def sqrt_or_depth() -> Any:
    """The argparse ``type`` of ``--checkpoint-every``: ``sqrt`` or a depth, kept as written
    (the JSON records the choice, not one depth's k)."""
    depth = depth_in()

    def parse(text: str) -> str:
        if text != "sqrt":
            try:
                depth(text)
            except argparse.ArgumentTypeError as err:
                message = str(err).replace("expected an integer", "expected sqrt or an integer")
                raise argparse.ArgumentTypeError(message) from None
        return text

    parse.__name__ = "sqrt or integer"
    parse.bounds = depth.bounds  # type: ignore[attr-defined]
    return parse


def checkpoint_every(spec: str, depth: int) -> int:
    return max(1, round(math.sqrt(depth))) if spec == "sqrt" else max(1, int(spec))


def gradient_errors(
    stages: dict[str, OdeStage], x: torch.Tensor, dtype: torch.dtype
) -> dict[str, float]:
    """Relative gradient error of each mode against ``store`` in ``dtype``."""
    grads: dict[str, list[torch.Tensor]] = {}
    for mode, stage in stages.items():
        s = copy.deepcopy(stage).to(dtype)
        xx = x.detach().to(dtype).requires_grad_()
        case = stage_case(s, "g", mode)
        train_step(case, xx, None)
        grads[mode] = flat_grads(case, xx)
    return {m: relative_error(g, grads["store"]) for m, g in grads.items()}


def run_depth(
    depth: int, args: argparse.Namespace, residual: Residual, log: Any
) -> list[dict[str, Any]]:
    """Every integrator × mode at one depth: times (interleaved), bytes, gradient errors."""
    device = args.device
    every = checkpoint_every(args.checkpoint_every, depth)
    stages: dict[str, dict[str, OdeStage]] = {}
    cases: list[Case] = []
    for integrator in args.integrators:
        base = build_stage(
            integrator,
            depth,
            residual,
            weights=args.weights,
            gamma=args.gamma,
            seed=args.seed,
            scale_step_free=not args.unscaled,
        ).to(device)
        stages[integrator] = {m: with_mode(base, m, every) for m in MODES}
        cases += [stage_case(s, integrator, m) for m, s in stages[integrator].items()]
    x = residual.input(dtype=torch.float32, device=device, seed=args.seed).requires_grad_()

    samples = time_round_robin(
        cases,
        x,
        Clock(args.clock, device),
        repeat=args.repeat,
        min_repeat=args.min_repeat,
        budget_s=args.budget,
        progress=lambda m: log(f"  N={depth}: {m}"),
    )
    gx = residual.input(args.grad_batch, dtype=torch.float64, device=device, seed=args.seed + 1)
    rows: list[dict[str, Any]] = []
    for integrator in args.integrators:
        modes = stages[integrator]
        err64 = gradient_errors(modes, gx, torch.float64)
        err32 = gradient_errors(modes, gx, torch.float32)
        ref_t = median(samples[f"{integrator}/store"])
        mem: dict[str, int] = {}
        for mode, stage in modes.items():
            mem[mode] = saved_bytes(stage, x, stage.parameters())
        for mode, stage in modes.items():
            t = median(samples[f"{integrator}/{mode}"])
            row: dict[str, Any] = {
                "integrator": integrator,
                "kind": stage.kind,
                "depth": depth,
                "mode": str(stage.backward_mode),
                "time_s": t,
                "time_samples_s": samples[f"{integrator}/{mode}"],
                "time_ratio": t / ref_t,
                "saved_bytes": mem[mode],
                "saved_ratio": mem[mode] / mem["store"] if mem["store"] else math.nan,
                "grad_err_float64": err64[mode],
                "grad_err_float32": err32[mode],
                "anchors_float32": stage.anchor_plan(torch.float32).count,
            }
            if device.startswith("cuda"):
                row["cuda_step_bytes"] = cuda_step_bytes(stage_case(stage, integrator, mode), x)
            rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]], depths: Sequence[int]) -> dict[str, Any]:
    """Targets per integrator: invert time vs store, invert flatness, store linearity."""
    lo, hi = min(depths), max(depths)
    out: dict[str, Any] = {}
    by = {(r["integrator"], r["depth"], r["mode"].split("(")[0]): r for r in rows}
    for integrator in dict.fromkeys(r["integrator"] for r in rows):
        inv = [by[(integrator, n, "invert")] for n in depths]
        kind = inv[0]["kind"]
        target = TARGET_EXACT if kind in EXACT_KINDS else TARGET_APPROX  # momentum: exact
        store_lo, store_hi = by[(integrator, lo, "store")], by[(integrator, hi, "store")]
        flat = inv[-1]["saved_bytes"] / inv[0]["saved_bytes"] - 1.0
        out[integrator] = {
            "kind": kind,
            "time_target": target,
            "invert_time_ratio": {n: r["time_ratio"] for n, r in zip(depths, inv, strict=True)},
            "time_target_met": all(r["time_ratio"] <= target for r in inv),
            "invert_bytes_growth": flat,
            "flat_target_met": abs(flat) <= TARGET_FLAT,
            "store_bytes_per_depth": (store_hi["saved_bytes"] / store_lo["saved_bytes"])
            / (hi / lo),
        }
    return out


def print_tables(rows: list[dict[str, Any]], depths: Sequence[int], log: Any) -> str:
    """One markdown table: a row per integrator and depth, modes side by side."""
    by = {(r["integrator"], r["depth"], r["mode"].split("(")[0]): r for r in rows}
    header = [
        "integrator",
        "inverse",
        "N",
        "store step",
        "ckpt time",
        "invert time",
        "store bytes",
        "ckpt bytes",
        "invert bytes",
        "ckpt err f64",
        "invert err f64",
        "invert err f32",
    ]
    body = []
    for integrator in dict.fromkeys(r["integrator"] for r in rows):
        for n in depths:
            s, c, i = (by[(integrator, n, m)] for m in MODES)
            count = i["anchors_float32"]
            kind = i["kind"] + (f" ({count} anchor{'s' * (count != 1)})" if count else "")
            body.append(
                [
                    integrator,
                    kind,
                    str(n),
                    f"{s['time_s'] * 1e3:.1f} ms",
                    fmt_ratio(c["time_ratio"]),
                    fmt_ratio(i["time_ratio"]),
                    fmt_bytes(s["saved_bytes"]),
                    f"{c['saved_ratio']:.3f}×",
                    f"{i['saved_ratio']:.4f}×",
                    fmt_err(c["grad_err_float64"]),
                    fmt_err(i["grad_err_float64"]),
                    fmt_err(i["grad_err_float32"]),
                ]
            )
    table = markdown_table(header, body)
    log(table)
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ScriptParser(prog="python -m benchmarks.modes", description=__doc__.split("\n")[0])
    add_run_options(p, depths="10 100 1000", weights="untied")
    p.add_argument("--integrators", nargs="+", default=list(INTEGRATORS), choices=INTEGRATORS)
    p.add_argument(
        "--checkpoint-every",
        type=sqrt_or_depth(),
        default="sqrt",
        help="k of checkpoint(k): an integer, or sqrt (√N at each depth)",
    )
    args = p.parse_args(argv)
    finish_run_options(args, [4, 40], [10, 100, 1000])
    check_split_width(p, args.width, args.integrators)
    return args


def main(argv: Sequence[str] | None = None, log: Any = print) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to JSON."""
    args = parse_args(argv)
    configure_threads(args.threads or None)
    residual = Residual(
        args.residual, args.width, args.hidden, args.batch, args.size, args.activation
    )
    machine = machine_description(args.device)
    log(f"modes: {residual.describe()}, weights {args.weights}, depths {args.depths}")
    log(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['threads']} thread(s)")
    rows: list[dict[str, Any]] = []
    tag = result_tag(args)
    for depth in args.depths:
        rows += run_depth(depth, args, residual, log)
        partial = write_partial(args.out, f"modes-{tag}", argv, rows)
    table = print_tables(rows, args.depths, log)
    summary = summarise(rows, args.depths)
    for integrator, s in summary.items():
        ratios = ", ".join(f"N={n}: {r:.2f}×" for n, r in s["invert_time_ratio"].items())
        log(
            f"{integrator:18s} {s['kind']:15s} invert time {ratios} "
            f"(target ≤ {s['time_target']}×: {'met' if s['time_target_met'] else 'MISSED'}); "
            f"invert bytes {s['invert_bytes_growth']:+.1%} from N={min(args.depths)} to "
            f"N={max(args.depths)} ({'flat' if s['flat_target_met'] else 'NOT flat'}); "
            f"store bytes/depth slope {s['store_bytes_per_depth']:.2f}"
        )
    machine["load_average_end"] = machine_description(args.device).get("load_average")
    payload = {
        "benchmark": "modes",
        "command": "python -m benchmarks.modes " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "residual": residual.describe(),
        "clock": args.clock,
        "rows": rows,
        "summary": summary,
        "table": table,
    }
    write_json(args.out / f"modes-{tag}.json", payload)
    partial.unlink(missing_ok=True)
    if not args.no_plot:
        plot(payload, args.out / f"modes-{tag}.png")
    return payload


def plot(payload: dict[str, Any], path: Path) -> bool:
    """The PNG of a modes payload: a column per integrator, the three modes in each."""
    groups: dict[str, dict[str, dict[int, tuple[float, float]]]] = {}
    for r in payload["rows"]:
        label = r["mode"].split("(")[0]
        groups.setdefault(r["integrator"], {}).setdefault(label, {})[r["depth"]] = (
            r["saved_bytes"],
            r["time_s"],
        )
    m = payload["machine"]
    title = (
        f"odedsl backward modes — {payload['residual']}, {m['cpu']}, {m['threads']} thread(s), "
        f"{payload['clock']} time; checkpoint(k) with k = {payload['config']['checkpoint_every']}"
    )
    return plot_groups(path, groups, title)


if __name__ == "__main__":
    main()
