"""`odedsl`: the command line, a thin layer over the Python API.

Each command lives in its own module with ``register(subparsers)`` and ``run(args) -> int``.
Exit codes: 0 success, 2 bad input (a located message, never a traceback), 1 other failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from odedsl.cli.common import EXIT_BAD_INPUT, report
from odedsl.cli.environment import check_environment
from odedsl.diagnostics import DslError

COMMANDS = ("check", "show", "build", "train", "gradcheck", "plot")

EPILOG = """examples:
  odedsl check specs/resnet.ode --set depth=64
  odedsl show specs/hamiltonian.ode
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="odedsl",
        description="Deep residual networks as ODE discretisations, compiled to PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"odedsl.cli.{name}_cmd").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        for warning in check_environment():
            print(warning.render(), file=sys.stderr)
        return int(args.run(args))
    except DslError as err:
        return report(err, as_json=as_json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:  # pragma: no cover - console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]
