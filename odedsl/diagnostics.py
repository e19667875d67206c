"""Located diagnostics: every stage of the pipeline reports into a collector, one error at the end.

A :class:`Diagnostic` names a file, line and column, carries an optional hint, and renders as::

    spec.ode:12:9: error: unknown layer 'conv3d' [E201]
       12 |         conv3d(16)
          |         ^^^^^^
      hint: did you mean 'conv2d'?

:class:`DslError` holds every diagnostic of a run; it is the only exception the front end raises
for a bad spec, a bad ``--set`` value or a missing file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class SourceFile:
    """A named text the spans point into (kept for rendering the offending line).

    Lines are separated by ``\n`` alone, as the parser counts them: ``str.splitlines`` would
    also break at ``\r``, ``\f`` or ``\u2028`` and show the wrong line under a diagnostic.
    """

    name: str
    text: str

    @cached_property
    def lines(self) -> list[str]:
        """The text's lines (split once: rendering many diagnostics stays linear)."""
        return [line.removesuffix("\r") for line in self.text.split("\n")]

    def line_text(self, line: int) -> str:
        lines = self.lines
        return lines[line - 1] if 1 <= line <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A 1-based line/column range in a source file."""

    source: SourceFile = field(compare=False, repr=False)
    line: int
    column: int
    end_line: int
    end_column: int

    @property
    def file(self) -> str:
        return self.source.name

    @classmethod
    def at_start(cls, source: SourceFile) -> Span:
        return cls(source, 1, 1, 1, 2)

    @classmethod
    def at_offset(cls, source: SourceFile, offset: int) -> Span:
        """The character at ``offset`` in ``source.text`` (lines split at ``\n`` alone)."""
        text = source.text
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return cls(source, line, column, line, column + 1)


@dataclass(frozen=True)
class Diagnostic:
    """One located message. ``code`` is a stable identifier from :data:`CODES`."""

    code: str
    message: str
    span: Span | None
    hint: str | None = None
    severity: Severity = "error"

    def render(self) -> str:
        where = f"{self.span.file}:{self.span.line}:{self.span.column}: " if self.span else ""
        out = [f"{where}{self.severity}: {self.message} [{self.code}]"]
        if self.span is not None:
            out.extend(_excerpt(self.span))
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.span.file if self.span else None,
            "line": self.span.line if self.span else None,
            "column": self.span.column if self.span else None,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


_WINDOW = 100  # long lines are shown as a window around the column


def _excerpt(span: Span) -> list[str]:
    """The source line and a caret line under the span (a window of it when the line is long)."""
    text = span.source.line_text(span.line).expandtabs(1)
    if not text:
        return []
    col = span.column
    width = span.end_column - col if span.end_line == span.line else len(text) - col + 1
    width = max(1, min(width, len(text) - col + 1, _WINDOW // 2))
    start = 0
    if len(text) > _WINDOW:
        start = max(0, min(col - 1 - _WINDOW // 2, len(text) - _WINDOW))
        text = ("…" if start else "") + text[start : start + _WINDOW] + "…"
        col = col - start + (1 if start else 0)
    gutter = f"{span.line:>5} | "
    return [gutter + text, " " * (len(gutter) - 2) + "| " + " " * (col - 1) + "^" * width]


#: Registry of diagnostic codes: one line of meaning each (the README lists them).
CODES: dict[str, str] = {
    "E100": "syntax error",
    "E101": "spec too large or too deeply nested",
    "E110": "file not found or unreadable",
    "E111": "forbidden import path",
    "E112": "import cycle",
    "E113": "import chain too deep",
    "E120": "duplicate definition",
    "E130": "bad parameter override",
    "E200": "unknown name",
    "E201": "unknown layer",
    "E202": "bad layer argument",
    "E203": "missing argument",
    "E204": "type error",
    "E205": "value out of range",
    "E206": "arithmetic error",
    "E210": "bad network structure",
    "E220": "shape mismatch",
    "E230": "bad stage option",
    "E231": "backward mode not available for this integrator",
    "E240": "bad integrator declaration",
    "E250": "resource limit exceeded",
    "E260": "name cannot be exported safely",
    "E261": "output path refused",
    "W300": "numerically fragile inverse",
    "W301": "rounding grows with depth",
    "W130": "unknown ODEDSL_ environment variable",
}


#: Diagnostics shown in a :class:`DslError`'s message; all stay in ``.diagnostics``. A spec
#: with 100,000 bad arguments must not produce a message of 100,000 excerpts.
MAX_RENDERED = 100


class DslError(Exception):
    """All diagnostics of a failed load, parse, check or compile."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(self.render())

    def render(self) -> str:
        errors = [d for d in self.diagnostics if d.severity == "error"]
        shown = self.diagnostics[:MAX_RENDERED]
        body = "\n".join(d.render() for d in shown)
        if len(self.diagnostics) > len(shown):
            body += f"\n... {len(self.diagnostics) - len(shown)} more not shown"
        return f"{body}\n{len(errors)} error{'s' if len(errors) != 1 else ''}"

    def __str__(self) -> str:
        return self.render()


class DslValueError(DslError, ValueError):
    """A DslError for an argument value that no stage can take (``odedsl.compile``'s
    ``backward``), and a ValueError: what a stage, and so an exported ``build()``, raises for
    the same value, so that one ``except ValueError`` catches it from either face."""


class Diagnostics:
    """A collector: stages ``report`` into it and call :meth:`raise_if_errors` when done."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self._seen: set[tuple[Diagnostic, str | None]] = set()

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        assert code in CODES, code
        self.add(Diagnostic(code, message, span, hint))

    def warning(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        assert code in CODES, code
        self.add(Diagnostic(code, message, span, hint, "warning"))

    def add(self, diagnostic: Diagnostic) -> None:
        """Report once: an error inside a block body called 1,000 times is one error (also
        one an evaluation raised: a block argument that is not an int, in a residual that
        serves both f and g, was reported twice when it was appended to ``items``).

        Spans compare by position only, so the file is part of the key: the same mistake at
        the same place of two files is two errors.
        """
        key = (diagnostic, diagnostic.span.file if diagnostic.span else None)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(diagnostic)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise DslError(sorted(self.items, key=_order))


def _order(d: Diagnostic) -> tuple[str, int, int]:
    if d.span is None:
        return ("", 0, 0)
    return (d.span.file, d.span.line, d.span.column)


#: How messages write a network parameter or an option the caller gave: ``"python"``, the
#: keyword argument of the Python API (``odedsl.compile(path, depth=8)``,
#: ``train(spec, batch_size=0)``), unless the command line sets ``"cli"`` (``--set depth=8``,
#: ``--batch-size 0``; :func:`odedsl.cli.main.main`) for its run. One front end serves both,
#: and each reader should see the spelling they type.
OVERRIDE_STYLE: ContextVar[Literal["python", "cli"]] = ContextVar(
    "odedsl_override_style", default="python"
)


def override(name: str, value: object = ..., *, as_given: bool = False) -> str:
    """``name=value`` as the caller writes it: ``depth=8``, ``bn=True`` in Python, ``--set
    depth=8``, ``--set bn=true`` on the command line (:data:`OVERRIDE_STYLE`). ``...``: a
    placeholder; ``as_given``: the value's repr on both faces, to quote what was passed."""
    cli = OVERRIDE_STYLE.get() == "cli"
    if value is ...:
        text = "..."
    elif as_given or not cli:
        text = repr(value)
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{'--set ' if cli else ''}{name}={text}"


def option(name: str, value: object = ..., *, as_given: bool = False) -> str:
    """An option of ``odedsl train`` (a keyword argument of ``odedsl.training.train``) as
    the caller writes it (:data:`OVERRIDE_STYLE`): ``batch_size=0`` in Python, ``--batch-size
    0`` on the command line. ``True``: a flag, ``amp=True`` / ``--amp``; ``...``: the name
    alone, ``lr`` / ``--lr``; ``as_given``: the value's repr on both faces, to quote what was
    passed (``--data 'cifar11'``)."""
    if OVERRIDE_STYLE.get() != "cli":
        return name if value is ... else f"{name}={value!r}"
    flag = "--" + name.replace("_", "-")
    if value is ... or value is True:
        return flag
    return f"{flag} {value!r}" if as_given else f"{flag} {value}"


def by_face(cli: str, python: str) -> str:
    """``cli`` on the command line, ``python`` in Python (:data:`OVERRIDE_STYLE`): a phrase the
    two faces word differently ("the same --set values" / "the same overrides")."""
    return cli if OVERRIDE_STYLE.get() == "cli" else python


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid name, or listing the valid names when few."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if 0 < len(choices) <= 12:
        return "expected one of: " + ", ".join(choices)
    return None
