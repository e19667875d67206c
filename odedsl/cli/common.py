"""Shared CLI plumbing: `--set name=value` parsing, loading a spec, reporting errors."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odedsl.diagnostics import Diagnostic, DslError
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec
from odedsl.spec.validate import ValidatedSpec
from odedsl.training.config import INT_BOUNDS

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
#: The largest ``--seed`` of gradcheck and plot: train's, from the one table of bounds.
MAX_SEED = INT_BOUNDS["seed"][1]
#: The files ``plot -o`` and ``show --draw`` write: what matplotlib saves by the suffix.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


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
