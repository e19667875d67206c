"""What every fuzz property checks: only ``DslError`` escapes, every diagnostic is located
inside its file (or is an explicitly file-level error), and checking is fast.

Locations are checked against the texts the test wrote, with lines split at ``\\n`` only (the
lexer's convention): line in ``1..lines``, column in ``1..len(line) + 1`` (one past the end
marks an end of file or of line), end not before start.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odedsl import DslError, load_spec, parse
from odedsl.diagnostics import Diagnostic

#: Codes allowed without a location: the top-level file itself cannot be read (no text exists
#: to point into). Everything else must name a line and column.
FILE_LEVEL = frozenset({"E110"})

#: The per-input budget for checking a spec (parse + imports + validation), CPU seconds.
CHECK_BUDGET_S = 1.0


@dataclass
class Outcome:
    spec: Any | None
    error: DslError | None
    cpu_s: float


def check_location(d: Diagnostic, texts: Mapping[str, str]) -> None:
    """Assert ``d`` is located inside a known text, or is an allowed file-level error."""
    if d.span is None:
        assert d.code in FILE_LEVEL, f"unlocated {d.code}: {d.message}"
        return
    span = d.span
    text = span.source.text
    assert text in texts.values() or (text == "" and d.code in ("E101", "E110")), (
        f"{d.code} points into a text that is not one of the spec's files: {span.file}"
    )
    lines = text.split("\n")
    assert 1 <= span.line <= len(lines), f"{d.code}: line {span.line} of {len(lines)}"
    width = len(lines[span.line - 1])
    assert 1 <= span.column <= width + 1, (
        f"{d.code}: column {span.column} on line {span.line} of length {width}: {d.message}"
    )
    assert (span.end_line, span.end_column) >= (span.line, span.column), f"{d.code}: {span}"
    assert span.end_line <= len(lines), f"{d.code}: end line {span.end_line} of {len(lines)}"
    assert d.code and d.message
    d.render()
    d.to_json()


def check_error(err: DslError, texts: Mapping[str, str]) -> None:
    assert err.diagnostics, "a DslError without diagnostics"
    assert any(d.severity == "error" for d in err.diagnostics)
    for d in err.diagnostics:
        check_location(d, texts)
    str(err)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The garbage collector paused: after thousands of examples a full collection of the
    test process's heap (hypothesis's, torch's) can take a second by itself, which is not
    the cost of checking one spec."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_checked(path: Path, texts: Mapping[str, str], **overrides: Any) -> Outcome:
    """``load_spec(path)``: anything but a ``DslError`` propagates (and fails the test)."""
    with no_gc():
        start = time.process_time()
        try:
            spec = load_spec(path, **overrides)
        except DslError as err:
            elapsed = time.process_time() - start
            check_error(err, texts)
            return Outcome(None, err, elapsed)
        return Outcome(spec, None, time.process_time() - start)


def parse_checked(text: str) -> Outcome:
    with no_gc():
        start = time.process_time()
        try:
            module = parse(text, "fuzz.ode")
        except DslError as err:
            elapsed = time.process_time() - start
            check_error(err, {"fuzz.ode": text})
            return Outcome(None, err, elapsed)
        return Outcome(module, None, time.process_time() - start)


def write_files(root: Path, files: Mapping[str, str | bytes]) -> dict[str, str]:
    """Write the spec's files under ``root``; return the texts (bytes decoded leniently)."""
    texts: dict[str, str] = {}
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
            texts[name] = content.decode("utf-8", "replace")
        else:
            path.write_bytes(content.encode("utf-8", "surrogatepass"))
            texts[name] = content
    return texts


def raised(fn: Any, *args: Any, **kwargs: Any) -> DslError:
    """The ``DslError`` that ``fn(*args, **kwargs)`` raises (any other outcome fails)."""
    try:
        fn(*args, **kwargs)
    except DslError as err:
        return err
    raise AssertionError(f"{getattr(fn, '__name__', fn)} raised no DslError")
