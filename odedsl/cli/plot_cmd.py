"""`odedsl plot SPEC`: seed 000 Fig. 3c for any spec, gradient error of invert vs depth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from odedsl.cli.argtypes import MAX_SEED, int_in
from odedsl.cli.common import (
    EXIT_OK,
    FIGURE_SUFFIXES,
    add_spec_arguments,
    check_figure_folder,
    parse_set,
    print_json,
)
from odedsl.cli.gradcheck_cmd import PROGRESSION_HELP
from odedsl.diagnostics import Diagnostic, DslError

DEFAULT_DEPTHS = "4,8,16,32,64,128"

EPILOG = f"""examples:
  odedsl plot specs/resnet.ode -o fig3c.png --integrators euler,heun
  odedsl plot specs/heunnet.ode --depths 4,8,...,256 -o heun.png
  odedsl plot specs/hamiltonian.ode --set size=8 --depths 2,4,8 -o ham.png

Every stage runs in invert mode and is compared with store in float64 (see `odedsl gradcheck`),
at each depth of --depths (default {DEFAULT_DEPTHS}; the network's `depth` parameter), one
line per stage; --integrators swaps every stage's `integrator` clause for each name in turn
(its arguments dropped), one line per (integrator, stage). The legend gives the fitted slope
of log error against log depth. --init smooth (default) makes untied weights linear in depth,
as trained weights tend to be (seed 000, Prop. 2); --init random draws each layer anew.
Measured on specs/resnet.ode (4,...,256, CPU): Euler's reconstruction error falls as 1/N but
its gradient error more slowly (slope about -0.6 smooth, -0.8 random: a state rebuilt off by
a little flips some ReLUs); Heun's falls far faster with smooth weights (slope about -3) and
like Euler's with random ones; exact inverses stay at rounding level (~1e-16).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot the invert-vs-store gradient error against depth (seed 000, Fig. 3c)",
        description="Gradient error of invert against store (float64) as a function of depth, "
        "log-log, one line per stage (and per integrator), with fitted slopes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(p)
    p.add_argument(
        "--depths",
        default=DEFAULT_DEPTHS,
        metavar="N,N,...",
        help=f"depths to run (default {DEFAULT_DEPTHS}); {PROGRESSION_HELP}",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="figure file, .png/.pdf/.svg (default <network>-gradient-error.png; missing "
        "folders are made)",
    )
    p.add_argument("--integrators", metavar="A,B", help="e.g. euler,heun: one line set each")
    p.add_argument(
        "--init",
        choices=("spec", "random", "smooth"),
        default="smooth",
        help="weights: the spec's own, random, or random and linear in depth (default)",
    )
    p.add_argument(
        "--batch", type=int_in(1, 65_536), default=4, help="batch size of the random input (4)"
    )
    p.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="seed of weights and batch (0)"
    )
    p.add_argument(
        "--threads", type=int_in(1, 1024), metavar="N", help="torch CPU threads (default: 1)"
    )
    p.add_argument("--json", action="store_true", help="also print the points as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from odedsl.cli.gradcheck_cmd import guarded

    return guarded("plot", _run, args)


def _run(args: argparse.Namespace) -> int:
    from odedsl.cli.gradcheck_cmd import check_batch, parse_int_list, warn_two_depths
    from odedsl.cli.progress import sweep_bar
    from odedsl.cli.train_cmd import set_threads
    from odedsl.spec.load import load_spec
    from odedsl.training.plot import depth_sweep, machine, plot_sweep, slope_text

    set_threads(args.threads, "plot")
    overrides = parse_set(args.overrides)
    depths = parse_int_list(args.depths, "--depths")
    warn_two_depths(overrides, "--depths", "plot")
    check_batch(args.batch)
    integrators: list[str | None] = [None]
    if args.integrators:
        integrators = [s.strip() for s in args.integrators.split(",") if s.strip()]
        twice = sorted({n for n in integrators if integrators.count(n) > 1})
        if twice:
            raise DslError(
                [
                    Diagnostic(
                        "E130",
                        f"--integrators {args.integrators!r}: {', '.join(twice)} given twice",
                        None,
                        "name each integrator once: each is one line of the figure",
                    )
                ]
            )
        if not integrators:
            raise DslError(
                [
                    Diagnostic(
                        "E130",
                        f"--integrators {args.integrators!r}: expected integrator names",
                        None,
                        "separate the names by commas, e.g. --integrators euler,heun,rk4, or "
                        "leave the option out to keep each stage's own integrator",
                    )
                ]
            )
    try:
        import matplotlib  # noqa: F401 - the `plot` extra
    except ImportError:
        raise DslError(
            [
                Diagnostic(
                    "E110",
                    "odedsl plot needs matplotlib, which is not installed",
                    None,
                    "pip install 'odedsl[plot]'",
                )
            ]
        ) from None
    name = load_spec(args.spec, network=args.network, **overrides).network.name
    out = Path(args.output or f"{name}-gradient-error.png")
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise DslError(
            [
                Diagnostic(
                    "E130",
                    f"-o {str(out)!r}: expected a .png, .pdf or .svg file",
                    None,
                    f"end the name in .png, .pdf or .svg, e.g. -o {name}-gradient-error.png "
                    "(the default)",
                )
            ]
        )
    check_figure_folder("-o", str(out), f"{name}-gradient-error.png")
    rows = depth_sweep(
        args.spec,
        depths,
        integrators=integrators,
        overrides=overrides,
        init=args.init,
        batch=args.batch,
        seed=args.seed,
        network=args.network,
        each=lambda points: sweep_bar(points, enabled=not args.quiet),
    )
    title = (
        f"{Path(args.spec).name} ({name}): invert vs store gradient error, float64, "
        f"init {args.init}\n{machine()}"
    )
    plot_sweep(rows, out, title=title)
    if args.json:
        print_json([r.to_json() for r in rows])
    else:
        lines: dict[tuple[str, str], list] = {}
        for r in rows:
            if r.stage != "all":
                lines.setdefault((r.integrator, r.stage), []).append(r)
        for (integ, stage), pts in lines.items():
            slope = slope_text([p.depth for p in pts], [p.grad_error for p in pts], pts[0].inverse)
            errs = ", ".join(f"{p.depth}: {p.grad_error:.2e}" for p in pts)
            print(f"{integ} · {stage}: {slope}; {errs}", flush=True)
    print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK
