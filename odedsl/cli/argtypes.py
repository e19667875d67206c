"""argparse ``type``s and bounds for command-line options: the ``odedsl`` commands' seeds,
thread counts and numbers, and every option of the example and benchmark scripts
(``python examples/*.py``, ``python -m benchmarks.*``). A bad value is a usage error (exit 2)
naming the option and what it allows, never a traceback from deep inside torch. The module
imports no torch itself (the ``odedsl`` commands' ``--help`` reads these bounds): the types
that need it import it when called."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from odedsl.diagnostics import OVERRIDE_STYLE, DslError
from odedsl.limits import Limits
from odedsl.training.config import INT_BOUNDS, OptionError, resolve_device

#: The largest ``--seed`` of gradcheck and plot: train's, from the one table of bounds.
MAX_SEED = INT_BOUNDS["seed"][1]
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


class ScriptParser(argparse.ArgumentParser):
    """The example and benchmark scripts' parser: it also checks the ``ODEDSL_*`` environment
    as every ``odedsl`` command does (:mod:`odedsl.cli.environment`), so a bad value is a usage
    error naming the variable and an unknown name a warning, before anything runs."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed = super().parse_known_args(args, namespace)
        from odedsl.cli.environment import check_environment  # the runtime's switches: torch

        try:
            found = check_environment()
        except DslError as err:
            shown = (d.message + (f" ({d.hint})" if d.hint else "") for d in err.diagnostics)
            super().error("; ".join(shown))
        for warning in found:
            print(warning.render(), file=sys.stderr)
        return parsed


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
    from odedsl.runtime.weights import depth_limit  # torch: not for the odedsl commands' options

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


def torch_device(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``cpu``, ``cuda`` or ``cuda:N`` as torch can use
    them here (``odedsl train``'s checks: :func:`~odedsl.training.config.resolve_device`), else
    a usage error saying what to pass (``cuda`` where torch sees no GPU fails at parse time, not
    with a traceback at the first tensor moved); ``auto``: cuda when available. Returns the
    device's name (``cuda:1``)."""
    style = OVERRIDE_STYLE.set("cli")  # a command-line option: the hints name --device
    try:
        return str(resolve_device(text))
    except OptionError as err:
        d = err.diagnostics[0]
        why = d.message.partition(": ")[2] or d.message  # the message names the option itself
        raise argparse.ArgumentTypeError(f"{text!r}: {why}; {d.hint}") from None
    finally:
        OVERRIDE_STYLE.reset(style)


def out_folder(text: str) -> Path:
    """An argparse ``type`` for ``--out``: a folder the script can create (if missing) and write
    in. A path to a file, or under one, or in a folder this user cannot write, is a usage error
    before anything runs, not a traceback from ``mkdir`` or from writing the results after it."""
    path = Path(text)
    try:
        if not text.strip():
            raise argparse.ArgumentTypeError("expected a folder for the results, got ''")
        if os.path.lexists(path) and not path.is_dir():
            what = "a broken link" if not path.exists() else "a file"
            raise argparse.ArgumentTypeError(
                f"{text} is {what}, not a folder; name a folder (created if missing)"
            )
        existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
        if not existing.is_dir():
            raise argparse.ArgumentTypeError(
                f"{text}: {existing} is a file, so no folder can be made under it; "
                "name a folder (created if missing)"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(
                f"{text}: {existing} is not writable; name a folder you can write in"
            )
        limit = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        for name in path.relative_to(existing).parts:  # the folders mkdir would make
            if len(os.fsencode(name)) > limit:
                raise argparse.ArgumentTypeError(
                    f"{text}: a folder name is longer than {limit} bytes; name a shorter one"
                )
    except OSError as err:  # a folder that cannot be searched
        raise argparse.ArgumentTypeError(f"{text}: {err.strerror or err}") from None
    return path


class Record(NamedTuple):
    """A results JSON that :func:`json_record` loaded: where it is, and its object."""

    path: Path
    data: dict[str, Any]


def json_record(key: str, kinds: Collection[str], hint: str) -> Callable[[str], Record]:
    """An argparse ``type`` for a results JSON: a file holding a JSON object whose ``key`` is
    one of ``kinds`` (``"experiment"``: which example wrote it; ``"benchmark"``: which
    benchmark). A missing file, a folder, text that is not JSON, or the record of another
    experiment is a usage error (``hint``: which files fit), not a traceback from ``open``,
    ``json`` or the plot's first missing key."""
    expected = " or ".join(sorted(kinds))

    def parse(text: str) -> Record:
        path = Path(text)
        try:
            raw = path.read_text(encoding="utf-8")
        except IsADirectoryError:
            raise argparse.ArgumentTypeError(f"{text} is a folder; {hint}") from None
        except FileNotFoundError:
            raise argparse.ArgumentTypeError(f"{text}: no such file; {hint}") from None
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or err
            raise argparse.ArgumentTypeError(f"cannot read {text}: {why}") from None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(
                f"{text} is not JSON ({err.msg} at line {err.lineno}, column {err.colno}); {hint}"
            ) from None
        except (ValueError, RecursionError) as err:  # an integer of 5000 digits, deep nesting
            raise argparse.ArgumentTypeError(
                f"{text} is not readable JSON ({err}); {hint}"
            ) from None
        if not isinstance(data, dict) or key not in data:
            raise argparse.ArgumentTypeError(
                f"{text} is not a results record (no {key!r} key); {hint}"
            )
        if not isinstance(data[key], str) or data[key] not in kinds:
            found = repr(data[key])
            found = found if len(found) <= 60 else found[:57] + "..."
            raise argparse.ArgumentTypeError(
                f"{text} is a record of {key} {found}, not of {expected}; {hint}"
            )
        return Record(path, data)

    parse.__name__ = "JSON file"
    return parse


T = TypeVar("T")


def redraw(
    parser: argparse.ArgumentParser,
    option: str,
    path: Path,
    draw: Callable[[], T],
    *,
    elsewhere: str = "the figure goes next to the JSON, so copy the JSON to a folder you can "
    "write in",
) -> T:
    """``draw()`` the figure of a record :func:`json_record` accepted. A key the plot needs that
    the record lacks, or a value of the wrong kind or an empty list (a record edited by hand, or
    written by an older script), and a figure that cannot be written, are usage errors naming
    ``option`` and the file, not tracebacks; ``elsewhere`` says how to write the figure
    somewhere else (the scripts differ: an ``--out`` option, or none)."""
    try:
        return draw()
    except OSError as err:
        where = err.filename or f"the figure of {path}"
        parser.error(f"argument {option}: cannot write {where}: {err.strerror or err}; {elsewhere}")
    except (LookupError, TypeError, AttributeError, ValueError, ArithmeticError) as err:
        parser.error(
            f"argument {option}: no figure can be drawn from {path} ({type(err).__name__}: "
            f"{err}); redraw a JSON as the script wrote it, or run the script again"
        )
