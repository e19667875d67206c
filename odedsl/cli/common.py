"""Shared CLI plumbing: `--set name=value` parsing, loading a spec, reporting errors; and the
argparse types (``int_in``, ``real_in``, ``depth_in``) the example and benchmark scripts use too."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odedsl.diagnostics import Diagnostic, DslError
from odedsl.limits import Limits
from odedsl.runtime.weights import depth_limit
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec
from odedsl.spec.validate import ValidatedSpec
from odedsl.training.config import INT_BOUNDS

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
#: The largest ``--seed`` of gradcheck and plot: train's, from the one table of bounds.
MAX_SEED = INT_BOUNDS["seed"][1]
#: The files ``plot -o`` and ``show --draw`` write: what matplotlib saves by the suffix.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
#: Upper bounds of the example and benchmark scripts' options (``python examples/*.py``,
#: ``python -m benchmarks.*``): far above any run they were written for, low enough that a
#: typo is a usage error rather than an allocation that exhausts memory or a count that
#: overflows. Widths and spatial sizes: the spec front end's default limits.
MAX_THREADS = 1024  # as --threads of gradcheck, plot and train
MAX_BATCH = 65_536  # as --batch of gradcheck and plot
MAX_WIDTH = Limits().max_width
MAX_SPATIAL = Limits().max_spatial
MAX_STEPS = 1_000_000  # training steps, iterations, timing rounds
MAX_SECONDS = 1e6  # time budgets (11.6 days)


def int_in(low: int, high: int) -> Any:
    """An argparse ``type`` for an integer in ``[low, high]``: a usage error (exit 2) outside
    it, instead of an overflow deep inside torch (``--seed 2**64``, ``--threads 10**23``).
    Only ASCII digits (``int`` would also read ``٣`` or ``1_0``); ``.bounds`` is ``(low, high)``."""

    def parse(text: str) -> int:
        digits = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,4000}", digits):  # below int()'s digit limit
            raise argparse.ArgumentTypeError(
                f"expected an integer between {low} and {high}, got {text!r}"
            )
        value = int(digits)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high}")
        return value

    parse.__name__ = "integer"
    parse.bounds = (low, high)  # type: ignore[attr-defined]
    return parse


_REAL = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf|infinity|nan)", re.I)


def real(text: str) -> float:
    """An argparse ``type`` for a number in ASCII (``float`` would also read ``١.٥`` or
    ``1_0``); ``inf`` and ``nan`` pass, for the option's own range check to name them."""
    if len(text) > 400 or not _REAL.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.01 or 1e-3, got {text!r}")
    return float(text)


real.__name__ = "number"


def real_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Any:
    """An argparse ``type`` for a finite number in ``[low, high]`` (``low_open``/``high_open``
    exclude an end; ``±inf`` leaves that side unbounded): a usage error (exit 2) naming the
    range, instead of ``nan`` or ``-1`` reaching torch (``--lr -1``: a ValueError traceback;
    ``--epochs nan``: one from ``round``). ASCII only, as :func:`real`; ``.bounds`` is
    ``(low, high)``."""

    def number(v: float) -> str:  # 1000000, not 1e+06
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"

    sides = []
    if low > -math.inf:
        sides.append(f"{'>' if low_open else '>='} {number(low)}")
    if high < math.inf:
        sides.append(f"{'<' if high_open else '<='} {number(high)}")
    allowed = " ".join(["a finite number", " and ".join(sides)]).strip()

    def parse(text: str) -> float:
        try:
            value = real(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        inside = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high
        )
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"{text} is not {allowed}")
        return value

    parse.__name__ = "number"
    parse.bounds = (low, high)  # type: ignore[attr-defined]
    return parse


def depth_in(low: int = 1) -> Any:
    """An argparse ``type`` for a stage depth, or a threshold on depths (``low`` 0): an integer
    from ``low`` to the runtime's depth limit (``ODEDSL_MAX_DEPTH``, read now). A depth the
    stage would refuse is then a usage error before anything runs, not a traceback after the
    shallower runs of a sweep."""
    limit = depth_limit()
    within = int_in(low, limit)

    def parse(text: str) -> int:
        try:
            return within(text)
        except argparse.ArgumentTypeError as err:
            if re.fullmatch(r"\s*\+?[0-9]{1,4000}\s*", text) and int(text) > limit:
                raise argparse.ArgumentTypeError(
                    f"{err} (the depth limit: raise it with ODEDSL_MAX_DEPTH)"
                ) from None
            raise

    parse.__name__ = "integer"
    parse.bounds = within.bounds  # type: ignore[attr-defined]
    return parse


def parse_set(items: Sequence[str] | None) -> dict[str, Value]:
    """`--set depth=64 --set lr=0.1 --set bn=true` → {"depth": 64, ...}; DslError on bad input."""
    out: dict[str, Value] = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name.isidentifier() or not raw:
            raise DslError(
                [
                    Diagnostic(
                        "E130", f"--set {item!r}: expected NAME=VALUE", None, "e.g. --set depth=64"
                    )
                ]
            )
        out[name] = parse_value(raw)
    return out


def parse_value(raw: str) -> Value:
    if raw in ("true", "false"):
        return raw == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="path to a .ode file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="NAME=VALUE",
        help="override a network parameter (repeatable)",
    )
    parser.add_argument("--network", help="which network of the file (default: the first)")


def load_from_args(args: argparse.Namespace) -> ValidatedSpec:
    return load_spec(Path(args.spec), network=args.network, **parse_set(args.overrides))


def report(err: DslError, *, as_json: bool) -> int:
    """Print a DslError (to stderr, or as JSON on stdout) and return the exit code 2."""
    if as_json:
        print(json.dumps({"ok": False, "errors": [d.to_json() for d in err.diagnostics]}, indent=2))
    else:
        print(err.render(), file=sys.stderr)
    return EXIT_BAD_INPUT


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))
