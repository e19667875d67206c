"""Shared CLI plumbing: `--set name=value` parsing, loading a spec, reporting errors (the
argparse types of options live in :mod:`odedsl.cli.argtypes`).

The commands' ``register`` uses this module, so it imports the front end (which imports
torch) only where a spec is loaded: ``odedsl --help`` and usage errors stay fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odedsl.diagnostics import Diagnostic, DslError
from odedsl.limits import Limits

if TYPE_CHECKING:  # pragma: no cover
    from odedsl.spec.evaluate import Value
    from odedsl.spec.validate import ValidatedSpec

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
#: The files ``plot -o`` and ``show --draw`` write: what matplotlib saves by the suffix.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def parse_set(items: Sequence[str] | None) -> dict[str, Value]:
    """`--set depth=64 --set lr=0.1 --set bn=true` → {"depth": 64, ...}; DslError on bad input.

    A name given twice is refused, not last-wins: a command line edited in a hurry (`--set
    depth=8` left in front of a new `--set depth=64`) would otherwise run a network nobody
    meant to without a word."""
    out: dict[str, Value] = {}
    given: dict[str, str] = {}
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
        if name in given:
            raise DslError(
                [
                    Diagnostic(
                        "E130",
                        f"--set {name} given twice ({given[name]!r} and {item!r})",
                        None,
                        f"give each parameter once, e.g. --set {name}={raw}",
                    )
                ]
            )
        given[name] = item
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


#: The spec argument that reads the spec from standard input: ``check``, ``show`` and
#: ``build`` read it; the others keep the spec's path (train's checkpoints and resumes, the
#: sweeps' figure titles) and read a file.
STDIN = "-"


def _spec_argument(*, stdin: bool) -> Callable[[str], str]:
    """The argparse ``type`` of the spec argument: an empty one is refused (``Path("")`` is
    the current folder: "cannot read '.': a directory"), and so is ``-`` where the command
    reads only files (it was looked up as a file named ``-``: 'no such file')."""

    def spec(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("expected the path of a .ode file, got ''")
        if text == STDIN and not stdin:
            raise argparse.ArgumentTypeError(
                "'-' (the spec from standard input) is read by check, show and build only; "
                "save the spec to a file and name it, e.g. spec.ode"
            )
        return text

    spec.__name__ = "spec"
    return spec


def add_spec_arguments(parser: argparse.ArgumentParser, *, stdin: bool = False) -> None:
    """The spec and its ``--set``/``--network``; ``stdin``: the command reads ``-``."""
    parser.add_argument(
        "spec",
        type=_spec_argument(stdin=stdin),
        help="path to a .ode file" + (", or - to read the spec from stdin" if stdin else ""),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="NAME=VALUE",
        help="override a network parameter (repeatable)",
    )
    parser.add_argument("--network", help="which network of the file (default: the first)")


def load_from_args(args: argparse.Namespace) -> ValidatedSpec:
    """The validated spec of the command line: the file named, or standard input for ``-``
    (diagnostics then name ``<stdin>``; its imports resolve against the working directory)."""
    from odedsl.spec.load import load_spec, load_spec_text

    overrides = parse_set(args.overrides)
    if args.spec == STDIN:
        return load_spec_text(read_stdin(), "<stdin>", network=args.network, params=overrides)
    return load_spec(Path(args.spec), network=args.network, **overrides)


def read_stdin() -> str:
    """Standard input as UTF-8 text, at most ``ODEDSL_MAX_SPEC_BYTES`` of it (a file's limit;
    read no further, so an endless pipe is refused rather than held in memory)."""
    from odedsl.syntax.imports import decode_spec, over_the_limit

    limits = Limits.from_env()
    data = sys.stdin.buffer.read(limits.max_spec_bytes + 1)
    if len(data) > limits.max_spec_bytes:
        raise over_the_limit(
            f"<stdin> has more than {limits.max_spec_bytes:,} bytes", "<stdin>", limits
        )
    return decode_spec(data, "<stdin>", "pipe the spec in as UTF-8")


def check_figure_folder(option: str, target: str, example: str) -> None:
    """The folder of a figure ``plot -o`` or ``show --draw`` will write: made if missing, as
    ``build -o`` and ``train --out`` make theirs, so it must be creatable. A path under a file
    or in a folder this user cannot write is refused (E130, exit 2) before anything runs,
    rather than failing after a sweep of gradient checks."""
    from odedsl.cli.argtypes import out_folder

    try:
        out_folder(str(Path(target).parent))
    except argparse.ArgumentTypeError as err:
        why = str(err).partition("; ")[0]  # the advice after it is the hint's
        raise DslError(
            [
                Diagnostic(
                    "E130",
                    f"{option} {target!r}: cannot write there: {why}",
                    None,
                    f"name a file in a folder you can write in (missing folders are created), "
                    f"e.g. {option} {example}",
                )
            ]
        ) from None


def report(err: DslError, *, as_json: bool) -> int:
    """Print a DslError (to stderr, or as JSON on stdout) and return the exit code 2."""
    if as_json:
        print(json.dumps({"ok": False, "errors": [d.to_json() for d in err.diagnostics]}, indent=2))
    else:
        print(err.render(), file=sys.stderr)
    return EXIT_BAD_INPUT


def memory_exhausted(err: BaseException) -> str | None:
    """The allocator's own words when ``err`` is an out-of-memory error (torch's
    ``OutOfMemoryError``, CUDA's or MPS's ``out of memory``, the CPU allocator's ``can't
    allocate``, Python's ``MemoryError``), else None. Only its first sentences: CUDA's message
    goes on for a paragraph of allocator statistics."""
    import torch

    oom_types = tuple(
        t
        for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError)
        if isinstance(t, type)
    )
    text = str(err).strip()
    if not (
        isinstance(err, (MemoryError, *oom_types))
        or (
            isinstance(err, RuntimeError)
            and ("out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text)
        )
    ):
        return None
    sentences = 2  # CUDA: "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has ..."
    if "DefaultCPUAllocator" in text:  # after "[enforce fail at alloc_cpu.cpp:127] err == 0."
        text, sentences = text[text.index("DefaultCPUAllocator") :], 1
    first = text.splitlines()[0] if text else type(err).__name__
    return ". ".join(first.split(". ")[:sentences]).rstrip(".")


def report_failure(command: str, message: str, hint: str | None, *, as_json: bool) -> int:
    """A failure that is not bad input (a numerical fault, memory, the disk): ``odedsl
    COMMAND: error: ...`` on stderr with its hint, and with ``--json`` also the JSON object
    of every failed run on stdout; exit code 1. ``hint`` is None only where the message
    carries its own advice (a NumericalFault's hint line, a diverging loss's tips)."""
    if as_json:
        error: dict[str, Any] = {"severity": "error", "message": message}
        if hint:
            error["hint"] = hint
        print_json({"ok": False, "errors": [error]})
    print(f"odedsl {command}: error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)
    return EXIT_ERROR


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))
