"""`odedsl gradcheck SPEC`: each stage's gradient error against `store`, in float64."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from itertools import pairwise

from rich.console import Console
from rich.table import Table

from odedsl.cli.argtypes import MAX_SEED, int_in
from odedsl.cli.common import (
    EXIT_OK,
    add_spec_arguments,
    memory_exhausted,
    parse_set,
    print_json,
    report_failure,
)
from odedsl.diagnostics import Diagnostic, DslError
from odedsl.limits import Limits

EPILOG = """examples:
  odedsl gradcheck specs/heunnet.ode --set depth=8
  odedsl gradcheck specs/resnet.ode --backward invert --depth-list 4,8,16,...,64 --json
  odedsl gradcheck specs/hamiltonian.ode --set size=8 --init spec

Both networks run in train mode on the same random batch after the same seed, so BatchNorm
sees identical batch statistics and dropout identical masks (--eval: eval mode instead).
--init random (default) wakes the zero-initialised residuals (BatchNorm scales ~ U(0.5, 1.5)),
without which every inverse is trivially exact; smooth also makes weights linear in depth.
Errors: ||g - g_store|| / ||g_store|| over each stage's parameters and over all ("all");
for invert stages also the relative error of the stage input rebuilt by the derived inverse.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradcheck",
        help="gradient error of each stage's backward mode against store (float64)",
        description="Compile the spec twice in float64, all stages in store mode and in their "
        "own (or --backward) mode, with the same weights and batch, and compare gradients.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(p)
    p.add_argument(
        "--depth-list",
        metavar="N,N,...",
        help=f"check at each depth (sets `depth`); {PROGRESSION_HELP}",
    )
    p.add_argument("--backward", metavar="MODE", help="store | invert | checkpoint(k)")
    p.add_argument("--integrator", metavar="NAME", help="swap every stage's integrator")
    p.add_argument(
        "--init",
        choices=("spec", "random", "smooth"),
        default="random",
        help="weights: the spec's own, random (default), or random and linear in depth",
    )
    p.add_argument(
        "--batch", type=int_in(1, 65_536), default=4, help="batch size of the random input (4)"
    )
    p.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="seed of weights and batch (0)"
    )
    p.add_argument("--eval", action="store_true", help="eval mode (BatchNorm running stats)")
    p.add_argument(
        "--threads", type=int_in(1, 1024), metavar="N", help="torch CPU threads (default: 1)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one row per stage")
    p.add_argument("--quiet", action="store_true", help="no progress bar over --depth-list")
    p.set_defaults(run=run)


def warn_two_depths(overrides: dict[str, object], sweep: str, command: str) -> None:
    """``--set depth=8`` beside a depth sweep: the sweep sets every run's depth, and the
    ``--set`` was dropped without a word."""
    if "depth" in overrides:
        print(
            f"odedsl {command}: warning: --set depth={overrides['depth']} is replaced by each "
            f"depth of {sweep}",
            file=sys.stderr,
        )


#: How ``a,b,...,c`` is read, for the help of ``--depths`` and ``--depth-list``.
PROGRESSION_HELP = (
    "a,b,...,c continues a,b up to c: geometric when b is a whole multiple or divisor of a "
    "(4,8,...,256; 64,32,...,4), else arithmetic (3,5,...,9; 2,4,6,...,12 with a third term); "
    "c must be a term"
)


def _bad(option: str, text: str) -> DslError:
    return DslError(
        [
            Diagnostic(
                "E130",
                f"{option} {text!r}: expected a comma-separated list of positive integers",
                None,
                "e.g. 4,8,16 or 4,8,...,256 (a geometric or arithmetic progression)",
            )
        ]
    )


def check_batch(batch: int) -> None:
    """``--batch`` of gradcheck and plot: train-mode BatchNorm needs two samples."""
    if batch < 2:
        hint = (
            "pass --batch 2 or more (the default is 4): in train mode, batch statistics need "
            "two samples"
        )
        raise DslError([Diagnostic("E205", f"--batch {batch}: must be at least 2", None, hint)])


#: Depths one ``--depth-list``/``--depths`` may name: each is a full gradient check.
MAX_LIST = 64


def parse_int_list(text: str, option: str) -> list[int]:
    """``4,8,16`` → [4, 8, 16]; ``4,8,...,64`` continues the progression (×2) up to 64, and
    ``64,32,...,4`` down (:data:`PROGRESSION_HELP`: which rule ``a,b`` sets); an end that is
    not a term is refused, naming the nearest terms.

    At most :data:`MAX_LIST` values, each within the depth limit (``Limits.from_env``),
    checked before anything runs (an arithmetic 2,3,...,10^12 is refused, not expanded)."""
    values = _expand(text, option)
    limit = Limits.from_env().max_depth
    too_deep = [v for v in values if v > limit]
    if too_deep:
        raise DslError(
            [
                Diagnostic(
                    "E250",
                    f"{option}: depth {too_deep[0]} exceeds the limit of {limit}",
                    None,
                    "raise it with ODEDSL_MAX_DEPTH if you mean it",
                )
            ]
        )
    return values


def _expand(text: str, option: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if len([p for p in parts if p != "..."]) > MAX_LIST:
        raise _too_many(option)
    if "..." not in parts:
        return _ints(parts, option, text)
    i = parts.index("...")
    if i < 2 or i != len(parts) - 2:
        raise _bad(option, text)
    head, last = _ints(parts[:i], option, text), _ints(parts[-1:], option, text)[0]
    step, rule = _progression(head, option, text)
    rising = head[1] > head[0]
    if last != head[-1] and (last > head[-1]) != rising:
        after = step(head[-1])
        example = "" if after is None else f", e.g. {','.join(parts[:i])},...,{after}"
        raise _off_progression(
            option,
            text,
            f"the progression {','.join(parts[:i])},... {'increases' if rising else 'decreases'} "
            f"({rule}), so it cannot end at {last}",
            f"end it {'above' if rising else 'below'} {head[-1]}{example}",
        )
    out = list(head)
    nxt: int | None = None
    while out[-1] != last:
        nxt = step(out[-1])
        if nxt is None or (nxt > last if rising else nxt < last):
            break
        out.append(nxt)
        if len(out) > MAX_LIST:
            raise _too_many(option)
    if out[-1] != last:
        near = [out[-1]] if nxt is None else sorted((out[-1], nxt))
        shown = " and ".join(map(str, near))
        raise _off_progression(
            option,
            text,
            f"{last} is not a term of {','.join(parts[:i])},... ({rule}); the nearest "
            f"{'terms are' if len(near) > 1 else 'term is'} {shown}",
            f"end at {' or '.join(map(str, near))}, e.g. {','.join(parts[:i])},...,{near[-1]}",
        )
    return out


def _progression(
    head: list[int], option: str, text: str
) -> tuple[Callable[[int], int | None], str]:
    """The rule the terms before ``...`` follow: the next term after a value (None when
    there is none: a fraction, or a value below 1) and its description (``×2, geometric``).

    Geometric when each term is the same whole multiple (or divisor) of the one before, so
    4,8,... doubles; else arithmetic, so 1,2,3,... counts up. An end value off the rule is
    refused by the caller rather than appended: 2,4,...,10 once ran 2, 4, 8, 10."""
    pairs = list(pairwise(head))
    if any(a == b for a, b in pairs):
        raise _off_progression(
            option,
            text,
            "the terms before '...' repeat a value, so they set no progression",
            "e.g. 4,8,...,256 (×2) or 3,5,...,9 (+2)",
        )
    if all(b % a == 0 for a, b in pairs) and len({b // a for a, b in pairs}) == 1:
        ratio = head[1] // head[0]
        return (lambda v: v * ratio), f"×{ratio}, geometric"
    if all(a % b == 0 for a, b in pairs) and len({a // b for a, b in pairs}) == 1:
        ratio = head[0] // head[1]
        return (lambda v: v // ratio if v % ratio == 0 else None), f"÷{ratio}, geometric"
    if len({b - a for a, b in pairs}) == 1:
        diff = head[1] - head[0]
        sign = "+" if diff > 0 else "−"
        return (lambda v: v + diff if v + diff >= 1 else None), f"{sign}{abs(diff)}, arithmetic"
    raise _off_progression(
        option,
        text,
        "the terms before '...' are neither a geometric nor an arithmetic progression",
        "e.g. 4,8,...,256 (×2) or 3,5,...,9 (+2)",
    )


def _off_progression(option: str, text: str, why: str, hint: str) -> DslError:
    return DslError([Diagnostic("E130", f"{option} {text!r}: {why}", None, hint)])


def _too_many(option: str) -> DslError:
    return DslError(
        [
            Diagnostic(
                "E130",
                f"{option}: more than {MAX_LIST} depths",
                None,
                "each depth is a full run; use a geometric progression, e.g. 4,8,...,4096",
            )
        ]
    )


def _ints(parts: list[str], option: str, text: str) -> list[int]:
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise _bad(option, text) from None
    if not values or any(v < 1 for v in values):
        raise _bad(option, text)
    return values


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3e}"


def guarded(name: str, fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``fn``; a numerical or system failure is one line on stderr (and the JSON of a
    failed run with ``--json``) and exit 1; running out of memory says what to shrink."""
    try:
        return fn(args)
    except DslError:  # some are ValueErrors too (a bad --backward): the CLI's exit 2
        raise
    except (RuntimeError, ValueError, OSError, MemoryError) as err:  # NumericalFault, memory...
        detail = memory_exhausted(err)
        if detail is not None:
            sweep = "--depths" if name == "plot" else "--depth-list"
            hint = (
                f"use a smaller --batch or depth (--set depth=N, {sweep}); the check keeps a "
                "store-mode copy of the network as its reference, so --backward saves no "
                "memory here"
            )
            return report_failure(name, f"out of memory ({detail})", hint, as_json=args.json)
        return report_failure(name, f"{type(err).__name__}: {err}", None, as_json=args.json)


def run(args: argparse.Namespace) -> int:
    return guarded("gradcheck", _run, args)


def _run(args: argparse.Namespace) -> int:
    from odedsl.cli.progress import sweep_bar
    from odedsl.cli.train_cmd import set_threads
    from odedsl.training.gradcheck import gradient_errors

    set_threads(args.threads, "gradcheck")
    overrides = parse_set(args.overrides)
    depths = parse_int_list(args.depth_list, "--depth-list") if args.depth_list else [None]
    if args.depth_list:
        warn_two_depths(overrides, "--depth-list", "gradcheck")
    check_batch(args.batch)
    rows = []
    points = [(args.integrator, depth) for depth in depths]
    for _, depth in sweep_bar(points, enabled=not args.quiet):
        params = dict(overrides) if depth is None else {**overrides, "depth": depth}
        rows += gradient_errors(
            args.spec,
            overrides=params,
            backward=args.backward,
            integrator=args.integrator,
            init=args.init,
            batch=args.batch,
            seed=args.seed,
            eval_mode=args.eval,
            network=args.network,
        )
    if args.json:
        print_json([r.to_json() for r in rows])
        return EXIT_OK
    table = Table(title=f"gradient error against store, float64 ({args.spec}, init {args.init})")
    for col in ("depth", "stage", "integrator", "backward", "inverse"):
        table.add_column(col)
    for col in ("grad error", "reconstruction", "anchors", "params"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r.depth),
            r.stage,
            r.integrator,
            r.backward,
            r.inverse,
            _fmt(r.grad_error),
            _fmt(r.reconstruction_error),
            "—" if r.anchors is None else str(r.anchors),
            f"{r.parameters:,}",
        )
    console = Console()
    if not console.is_terminal:  # logs and pipes: the whole table, not 80 columns
        console = Console(width=130)
    console.print(table)
    return EXIT_OK
