"""Redraw the PNG of a results JSON (``python -m benchmarks.plot benchmarks/results/*.json``),
e.g. after changing the plotting code, without measuring again."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import modes, peers
from odedsl.cli.argtypes import ScriptParser, json_record, redraw

#: The benchmarks that draw a figure, by the ``benchmark`` key of their JSON.
DRAW: dict[str, Callable[[dict[str, Any], Path], bool]] = {"modes": modes.plot, "peers": peers.plot}
#: Benchmarks whose JSON has no figure: skipped, so ``results/*.json`` redraws every figure.
NO_FIGURE = ("compile", "overhead")


def parser() -> argparse.ArgumentParser:
    p = ScriptParser(prog="python -m benchmarks.plot", description=__doc__)
    p.add_argument(
        "files",
        nargs="+",
        metavar="JSON",
        type=json_record(
            "benchmark",
            {*DRAW, *NO_FIGURE},
            "give a JSON that python -m benchmarks.modes or benchmarks.peers wrote",
        ),
        help="results JSON of benchmarks.modes or benchmarks.peers (the PNG goes next to it)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    for path, payload in args.files:
        kind, png = payload["benchmark"], path.with_suffix(".png")
        if kind in NO_FIGURE:
            print(f"skipped {path}: benchmarks.{kind} draws no figure", file=sys.stderr)
        elif redraw(p, "JSON", path, lambda: DRAW[kind](payload, png)):  # noqa: B023
            print(f"wrote {png}")
        else:
            print("matplotlib is not installed", file=sys.stderr)


if __name__ == "__main__":
    main()
