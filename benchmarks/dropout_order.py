"""Dropout and the approximate inverses: does invert keep its order of accuracy?

A stochastic stage draws one dropout mask per layer and residual function, shared by the
integrator's calls of it in that layer (:mod:`odedsl.runtime.replay`). With a mask per call
(odedsl before 2026-12-03; here the ``per call`` column, the runtime's stream key patched back
to the call's) Heun's two calls and RK4's four run different functions within one step, and
the reverse step's error is O(h²) per layer whatever the scheme.

Per integrator and depth: the relative gradient error of ``invert`` against ``store`` (all
parameters, float64, tied weights, MLP residual 8→16→8 with ``dropout(p)`` after the tanh,
weights moved off their initial values, one training forward and backward per seed), without
dropout, with one mask per layer and with one per call; the worst over ``--seeds`` seeds.

Usage: ``python -m benchmarks.dropout_order`` (about a minute); prints a table, writes JSON.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

import odedsl
import odedsl.runtime.calls as calls_module
from benchmarks.common import (
    RESULTS,
    configure_threads,
    fmt_err,
    machine_description,
    machine_tag,
    markdown_table,
    write_json,
)
from odedsl.cli.argtypes import MAX_THREADS, ScriptParser, depth_in, int_in, out_folder, real_in
from odedsl.runtime.replay import mix_seed

SPEC = """network n(depth: int = 16) {
    input vector[8]
    stage s = ode(depth) {
        integrator INTEGRATOR weights tied backward MODE
        residual { linear(16) tanh DROPOUT linear(8) }
    }
}"""
VARIANTS = ("none", "per layer", "per call")
APPROXIMATE = ("euler", "heun", "rk4")  # the question is about their order


@contextlib.contextmanager
def masks_per_call() -> Iterator[None]:
    """The runtime's random stream keyed by the whole call, as before 2026-12-03."""
    kept = calls_module.random_stream
    calls_module.random_stream = lambda seed, call: mix_seed(seed, *call)  # type: ignore[assignment]
    try:
        yield
    finally:
        calls_module.random_stream = kept


def gradient_error(integrator: str, depth: int, p: float, seed: int, per_call: bool) -> float:
    """Relative error of invert's parameter gradient against store's."""
    text = SPEC.replace("INTEGRATOR", integrator)
    text = text.replace("DROPOUT", f"dropout({p})" if p > 0 else "")
    grads = []
    for mode in ("store", "invert"):
        torch.manual_seed(seed)
        model = odedsl.compile(text.replace("MODE", mode), depth=depth, dtype=torch.float64)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.3 * torch.randn_like(param))
        x = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(7)
        with masks_per_call() if per_call else contextlib.nullcontext():
            model(x).square().sum().backward()
        grads.append(torch.cat([q.grad.flatten() for q in model.parameters()]))
    return float((grads[1] - grads[0]).norm() / grads[0].norm())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    # bounded like the other benchmarks' options: `--seeds 0` was a traceback from max(),
    # `--depths 0` or an integrator this residual cannot run one from the compiler
    ap = ScriptParser(
        prog="python -m benchmarks.dropout_order", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--integrators", nargs="+", choices=APPROXIMATE, default=list(APPROXIMATE))
    ap.add_argument("--depths", nargs="+", type=depth_in(), default=[16, 64])
    ap.add_argument("--seeds", type=int_in(1, 1000), default=3, help="seeds 0 … n-1 (3)")
    ap.add_argument(
        "--p", type=real_in(0.0, 1.0, high_open=True), default=0.2, help="the dropout rate"
    )
    ap.add_argument("--threads", type=int_in(1, MAX_THREADS), default=1)
    ap.add_argument("--out", type=out_folder, default=RESULTS / "dropout-order")
    args = ap.parse_args(argv)
    configure_threads(args.threads)
    warnings.simplefilter("ignore")  # ApproximateGradientWarning: measuring it is the point
    rows = []
    for integrator in args.integrators:
        for depth in args.depths:
            row: dict[str, Any] = {"integrator": integrator, "depth": depth}
            for variant in VARIANTS:
                p = 0.0 if variant == "none" else args.p
                row[variant] = max(
                    gradient_error(integrator, depth, p, seed, variant == "per call")
                    for seed in range(args.seeds)
                )
            rows.append(row)
    header = ["integrator", "N", "no dropout", "one mask per layer", "one mask per call"]
    table = markdown_table(
        header,
        [[r["integrator"], str(r["depth"]), *(fmt_err(r[v]) for v in VARIANTS)] for r in rows],
    )
    print(f"invert against store, worst of {args.seeds} seeds, float64, dropout {args.p}:\n")
    print(table)
    record = {
        "command": " ".join(["python -m benchmarks.dropout_order", *(argv or sys.argv[1:])]),
        "machine": machine_description("cpu"),
        "rows": rows,
    }
    path = args.out / f"dropout-order-{machine_tag('cpu')}.json"
    write_json(path, record)
    print(f"\nwrote {path}")
    return record


if __name__ == "__main__":
    main()
