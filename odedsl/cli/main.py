"""`odedsl`: the command line, a thin layer over the Python API.

Each command lives in its own module with ``register(subparsers)`` and ``run(args) -> int``.
Exit codes: 0 success, 2 bad input (a located message, never a traceback), 1 other failure,
130 interrupted. Only the standard library and :mod:`odedsl.diagnostics` are imported at module
level: importing torch takes seconds, and a Ctrl-C then must still meet ``entry``'s handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from odedsl.diagnostics import OVERRIDE_STYLE, DslError

#: Equal to :data:`odedsl.cli.common.EXIT_BAD_INPUT`, defined here so importing it stays light.
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
COMMANDS = ("check", "show", "build", "train", "gradcheck", "plot")

EPILOG = """examples:
  odedsl check specs/resnet.ode --set depth=64
  odedsl show specs/hamiltonian.ode
"""


def version() -> str:
    """The installed distribution's version (what pip installed, which a bug report needs);
    the package's own ``__version__`` when it runs from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("odedsl")
    except PackageNotFoundError:
        from odedsl import __version__

        return __version__


class VersionAction(argparse.Action):
    """``--version``: argparse's own action, but the version is looked up when the option is
    given, not each time the parser is built (``importlib.metadata`` takes tens of ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are also a JSON object on stdout when the command
    line asked for ``--json`` (as every other error of a ``--json`` run is): a tool reading
    stdout would otherwise get nothing to parse from ``--threads 0 --json``."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            from odedsl.cli.common import report
            from odedsl.diagnostics import Diagnostic

            hint = f"{self.prog} --help lists the options"
            report(DslError([Diagnostic("E130", message, None, hint)]), as_json=True)
        super().error(message)  # the usage and message on stderr, exit 2


def asks_for_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` is an option of the command line (not an operand after ``--``),
    spelled whole or abbreviated as argparse accepts it (``--js``: no other option starts
    with ``--j``)."""
    options = list(argv)
    before = options[: options.index("--")] if "--" in options else options
    return any(len(o) > 2 and "--json".startswith(o) for o in before)


def build_parser(*, json_errors: bool = False) -> argparse.ArgumentParser:
    """The parser of every command (imports the command modules, which import torch only
    in their ``run``); ``json_errors``: usage errors are also printed as JSON (:class:`Parser`)."""
    parser = Parser(
        prog="odedsl",
        description="Deep residual networks as ODE discretisations, compiled to PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"odedsl.cli.{name}_cmd").register(sub)
    for command in (parser, *sub.choices.values()):
        command.json_errors = json_errors  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; heavy modules are imported here, where interrupts are handled, and
    only after the command line parsed: ``--help`` and usage errors import no torch."""
    try:
        from odedsl.cli.common import report

        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(json_errors=asks_for_json(argv)).parse_args(argv)
    except KeyboardInterrupt:
        return _interrupted()
    as_json = bool(getattr(args, "json", False))
    style = OVERRIDE_STYLE.set("cli")  # messages write parameters as --set NAME=VALUE
    try:
        from odedsl.cli.environment import check_environment  # the runtime's switches: torch

        with warnings.catch_warnings():  # puts the printer back after the run
            warnings.showwarning = _warning_printer(f"odedsl {args.command}")
            for warning in check_environment():
                print(warning.render(), file=sys.stderr)
            return int(args.run(args))
    except DslError as err:
        return report(err, as_json=as_json)
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        return 0
    finally:
        OVERRIDE_STYLE.reset(style)


def _warning_printer(prog: str) -> Callable[..., None]:
    """odedsl's own warnings (approximate gradients, anchors, drift) as ``odedsl train:
    warning: ...`` lines, as the command's errors are, not Python's ``file:line: Category:``
    with a source line of the library; other libraries' warnings print as Python prints them."""
    python = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *where: Any, **kw: Any) -> None:
        if category.__module__.split(".")[0] == "odedsl":
            print(f"{prog}: warning: {message}", file=sys.stderr)
        else:
            python(message, category, *where, **kw)

    return show


def _interrupted() -> int:
    """Ctrl-C is a normal way to stop a command: one line, no traceback."""
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def entry() -> None:
    """The console script; also catches a Ctrl-C that arrives outside ``main``'s handlers."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = _interrupted()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()

__all__ = ["EXIT_BAD_INPUT", "Parser", "build_parser", "entry", "main", "version"]
