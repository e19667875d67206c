"""torch.compile of an ODE stage: compile time against depth, and the step time it buys.

A Hamiltonian (Verlet) stage with the convolutional residual, untied weights, between a 1×1
stem convolution and a linear head, compiled with ``torch.compile`` (inductor by default) in
each backward mode at depths N (8, 64, 512). Each configuration runs in a **fresh process**
with an **empty inductor cache** (cold), then once more in a fresh process reusing that cache
(warm), and reports:

* ``compile``: wall time of the first training step (forward, linear loss, backward) minus the
  median steady compiled step, i.e. what compiling cost;
* ``graphs``: Dynamo graphs compiled (``torch._dynamo.utils.counters``), which for odedsl does
  not depend on N: one per residual function and grad mode, plus the layers around the stage;
* ``step``: median compiled and eager training-step times (wall clock, one torch thread;
  ``--device cuda`` synchronises around each step).

For reference it also compiles the plain way a stage is usually written, a Python loop over
per-layer modules (``--unrolled-depths``, default 8 and 64; Dynamo unrolls that loop, so its
compile time grows with N: it is not run at 512 by default because it would take minutes).

Usage (from the repository root)::

    python -m benchmarks.compile                 # N ∈ {8, 64, 512}, about 5 minutes on 2 cores
    python -m benchmarks.compile --quick         # CI sizes, aot_eager, one process: graph counts

Writes ``benchmarks/results/compile-<machine>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch._dynamo.utils import counters

from benchmarks.common import (
    RESULTS,
    Residual,
    check_split_width,
    configure_threads,
    fill_defaults,
    machine_description,
    markdown_table,
    median,
    result_tag,
    write_json,
)
from odedsl.cli.argtypes import (
    MAX_BATCH,
    MAX_SPATIAL,
    MAX_STEPS,
    MAX_THREADS,
    MAX_WIDTH,
    ScriptParser,
    depth_in,
    int_in,
    out_folder,
    torch_device,
)

MODES = ("store", "checkpoint", "invert")
#: What ``measure`` reads of a configuration (``--worker``: the JSON a parent passes its worker).
WORKER_KEYS = ("mode", "depth", "backend", "residual", "repeat", "threads")
#: The done-when criterion of issue 10: cold compile at the deepest N within this of the shallowest.
TARGET_GROWTH = 1.5


# ----------------------------------------------------------------------------- the networks
def odedsl_network(depth: int, mode: str, residual: Residual) -> nn.Module:
    """stem conv → Hamiltonian stage (untied, ``mode``) → pool → linear."""
    from odedsl.integrators import standard_library
    from odedsl.runtime import OdeStage, WeightSchedule

    program = standard_library()["hamiltonian"].program(None)
    half = residual.width // 2
    backward: Any = ("checkpoint", max(1, round(depth**0.5))) if mode == "checkpoint" else mode
    stage = OdeStage(
        "body",
        program,
        {r: (lambda: residual.module(half)) for r in program.residuals},
        depth=depth,
        schedule=WeightSchedule("untied"),
        backward=backward,
    )
    return _wrap(stage, residual)


class PythonLoopVerlet(nn.Module):
    """The reference: the same Verlet stage as a Python loop over per-layer modules."""

    def __init__(self, depth: int, residual: Residual) -> None:
        super().__init__()
        half = residual.width // 2
        self.f = nn.ModuleList([residual.module(half) for _ in range(depth)])
        self.g = nn.ModuleList([residual.module(half) for _ in range(depth)])
        self.h = 1.0 / depth

    def forward(self, x: Tensor) -> Tensor:
        y, z = x.chunk(2, dim=1)
        for f, g in zip(self.f, self.g, strict=True):
            y = y + self.h * f(z)
            z = z - self.h * g(y)
        return torch.cat([y, z], dim=1)


def _wrap(stage: nn.Module, residual: Residual) -> nn.Module:
    w = residual.width
    return nn.Sequential(
        nn.Conv2d(w, w, 1), stage, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 10)
    )


# ----------------------------------------------------------------------------- one process
def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Build, compile and time one configuration (runs inside a worker process)."""
    configure_threads(config["threads"])
    residual = Residual(**config["residual"])
    torch.manual_seed(0)
    depth, mode = config["depth"], config["mode"]
    if mode == "python-loop":
        net = _wrap(PythonLoopVerlet(depth, residual), residual)
    else:
        net = odedsl_network(depth, mode, residual)
    device = torch.device(config.get("device", "cpu"))
    net = net.to(device)
    x = residual.input(dtype=torch.float32, device=str(device))
    weight = torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(1)).to(device)

    def step(module: nn.Module) -> float:
        for p in net.parameters():
            p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        (module(x) * weight).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    compiled = torch.compile(net, backend=config["backend"])
    first = step(compiled)
    graphs = int(counters["stats"]["unique_graphs"])
    steady = [step(compiled) for _ in range(config["repeat"])]
    eager = [step(net) for _ in range(config["repeat"])]
    again = int(counters["stats"]["unique_graphs"])
    return {
        "first_s": first,
        "compiled_step_s": median(steady),
        "eager_step_s": median(eager),
        "compile_s": max(0.0, first - median(steady)),
        "graphs": graphs,
        "recompiled_after_first_step": again - graphs,
    }


def run_worker(config: dict[str, Any], cache: Path) -> dict[str, Any]:
    """``measure(config)`` in a fresh interpreter whose inductor cache is ``cache``."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "benchmarks.compile", "--worker", json.dumps(config)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=3600)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"error": " / ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the benchmark
def compile_backend(text: str) -> str:
    """An argparse ``type`` for ``--backend``: a name ``torch.compile`` knows (looked up only
    when the option is given: listing the backends imports them), not a traceback in the
    first worker."""
    known = torch._dynamo.list_backends(exclude_tags=())  # aot_eager and eager: tagged debug
    if text not in known:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch.compile backend; e.g. inductor or aot_eager "
            f"(torch._dynamo.list_backends(exclude_tags=()) lists all {len(known)})"
        )
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ScriptParser(prog="python -m benchmarks.compile", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI sizes, aot_eager, in process: seconds")
    width = int_in(1, MAX_WIDTH)
    p.add_argument("--depths", nargs="+", type=depth_in(), default=None, help="default 8 64 512")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument(
        "--unrolled-depths", nargs="*", type=depth_in(), default=None, help="python-loop reference"
    )
    p.add_argument(
        "--backend",
        type=compile_backend,
        default=None,
        help="torch.compile backend (default inductor; quick aot_eager)",
    )
    p.add_argument("--width", type=width, default=None, help="channels, even (default 16)")
    p.add_argument("--hidden", type=width, default=None, help="residual hidden channels (16)")
    p.add_argument(
        "--batch", type=int_in(1, MAX_BATCH), default=None, help="batch size (default 32)"
    )
    p.add_argument("--size", type=int_in(1, MAX_SPATIAL), default=8, help="spatial size")
    p.add_argument(
        "--repeat", type=int_in(1, MAX_STEPS), default=None, help="timed steps (default 5)"
    )
    p.add_argument("--threads", type=int_in(1, MAX_THREADS), default=1)
    p.add_argument("--device", type=torch_device, default="cpu", help="cpu or cuda")
    p.add_argument("--no-warm", action="store_true", help="skip the warm-cache runs")
    p.add_argument(
        "--in-process", action="store_true", help="no worker processes (graph counts only)"
    )
    p.add_argument("--out", type=out_folder, default=RESULTS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:  # the configuration a parent process passes to its worker
        try:
            args.worker = json.loads(args.worker)
        except ValueError as err:
            p.error(f"argument --worker: not JSON ({err})")
        if not isinstance(args.worker, dict) or not set(WORKER_KEYS) <= args.worker.keys():
            p.error(f"argument --worker: expected a JSON object with {', '.join(WORKER_KEYS)}")
    quick = args.quick
    defaults = {
        "depths": [2, 16] if quick else [8, 64, 512],
        "unrolled_depths": [] if quick else [8, 64],
        "backend": "aot_eager" if quick else "inductor",
        "width": 4 if quick else 16,
        "hidden": 4 if quick else 16,
        "batch": 4 if quick else 32,
        "repeat": 1 if quick else 5,
    }
    fill_defaults(args, defaults)
    check_split_width(p, args.width, ["hamiltonian"])
    if quick:
        args.no_warm = args.in_process = True
    return args


def main(argv: Sequence[str] | None = None, log: Any = print) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(args.worker)))
        return {}
    residual = Residual("conv", args.width, args.hidden, args.batch, args.size)
    machine = machine_description(args.device)
    log(f"compile: Hamiltonian stage, {residual.describe()}, backend {args.backend}")
    plan = [(m, n) for m in args.modes for n in args.depths]
    plan += [("python-loop", n) for n in args.unrolled_depths]
    rows: list[dict[str, Any]] = []
    for i, (mode, depth) in enumerate(plan, start=1):
        config = {
            "mode": mode,
            "depth": depth,
            "backend": args.backend,
            "residual": {
                "kind": "conv",
                "width": args.width,
                "hidden": args.hidden,
                "batch": args.batch,
                "size": args.size,
            },
            "repeat": args.repeat,
            "threads": args.threads,
            "device": args.device,
        }
        if args.in_process:  # graph counts only: times would include earlier configurations
            torch._dynamo.reset()
            counters.clear()
            cold, warm = measure(config), None
        else:
            with tempfile.TemporaryDirectory(prefix="odedsl-inductor-") as cache:
                cold = run_worker(config, Path(cache))
                warm = None if args.no_warm else run_worker(config, Path(cache))
        row = {"mode": mode, "depth": depth, "cold": cold, "warm": warm}
        rows.append(row)
        log(f"[{i}/{len(plan)}] {mode} N={depth}: {_brief(cold)}")
    summary = summarise(rows, args.depths)
    table = print_table(rows, log)
    for mode, s in summary.items():
        if args.in_process:
            log(f"{mode}: graphs equal at every depth: {s['graphs_equal']} (times not comparable)")
            continue
        verdict = "met" if s["met"] else "MISSED"
        log(
            f"{mode}: cold compile N={s['deepest']} / N={s['shallowest']} = "
            f"{s['growth']:.2f}× (target ≤ {TARGET_GROWTH}×: {verdict})"
        )
    payload = {
        "benchmark": "compile",
        "command": "python -m benchmarks.compile "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "residual": residual.describe(),
        "rows": rows,
        "summary": summary,
        "table": table,
        "torch": torch.__version__,
    }
    tag = result_tag(args)
    write_json(args.out / f"compile-{tag}.json", payload)
    return payload


def _brief(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    if "error" in result:
        return f"error: {result['error']}"
    return (
        f"compile {result['compile_s']:.1f} s, {result['graphs']} graphs, step "
        f"{result['compiled_step_s'] * 1e3:.1f} ms compiled / {result['eager_step_s'] * 1e3:.1f} "
        "ms eager"
    )


def summarise(rows: list[dict[str, Any]], depths: Sequence[int]) -> dict[str, Any]:
    """Per odedsl mode: cold compile time at the deepest N over the shallowest."""
    out: dict[str, Any] = {}
    lo, hi = min(depths), max(depths)
    for mode in MODES:
        found = {r["depth"]: r["cold"] for r in rows if r["mode"] == mode}
        if lo not in found or hi not in found or lo == hi:
            continue
        if "error" in found[lo] or "error" in found[hi]:
            out[mode] = {"shallowest": lo, "deepest": hi, "growth": None, "met": False}
            out[mode]["graphs_equal"] = False
            continue
        growth = found[hi]["compile_s"] / max(found[lo]["compile_s"], 1e-9)
        out[mode] = {
            "shallowest": lo,
            "deepest": hi,
            "growth": growth,
            "met": growth <= TARGET_GROWTH,
            "graphs_equal": found[hi]["graphs"] == found[lo]["graphs"],
        }
    return out


def print_table(rows: list[dict[str, Any]], log: Any) -> str:
    def cell(result: dict[str, Any] | None, key: str, scale: float, fmt: str) -> str:
        if result is None:
            return "-"
        if "error" in result:
            return "error"
        return format(result[key] * scale, fmt)

    body = []
    for r in rows:
        cold, warm = r["cold"], r["warm"]
        ratio = "-"
        if cold and "error" not in cold:
            ratio = f"{cold['compiled_step_s'] / cold['eager_step_s']:.2f}×"
        body.append(
            [
                "python loop (reference)" if r["mode"] == "python-loop" else f"odedsl {r['mode']}",
                str(r["depth"]),
                cell(cold, "compile_s", 1, ".1f"),
                cell(warm, "compile_s", 1, ".1f"),
                cell(cold, "graphs", 1, "d"),
                cell(cold, "compiled_step_s", 1e3, ".1f"),
                cell(cold, "eager_step_s", 1e3, ".1f"),
                ratio,
            ]
        )
    header = [
        "stage",
        "N",
        "cold compile (s)",
        "warm compile (s)",
        "graphs",
        "compiled step (ms)",
        "eager step (ms)",
        "compiled / eager",
    ]
    table = markdown_table(header, body)
    log(table)
    return table


if __name__ == "__main__":
    main()
