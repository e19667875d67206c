"""What may reach generated code from a spec, and nothing else (issue 9.3).

Generated source is assembled only from :class:`Code` fragments, and the templates' ``finalize``
hook refuses any other value, so a plain string from the spec cannot be printed by accident.
``Code`` is made here from three vetted kinds of input:

* identifiers matching :data:`IDENTIFIER` (and not Python keywords): :func:`ident`, :func:`quoted`;
* literals of ``int``, ``float`` and ``bool`` (and tuples of them, and ``None``): :func:`literal`;
* comment text filtered to a whitelist of characters, one line: :func:`comment`, :func:`where`.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
import textwrap
from collections.abc import Iterable

from odedsl.diagnostics import Diagnostic, DslError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
BUILTINS = frozenset(dir(builtins))
_COMMENT_PUNCTUATION = set(" +-*/^()[]{},.:;=<>!?_|'`%&@~#·←→×≈≠≤≥ᵀ−…")
_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_COMMENT = 160

#: Diagnostic codes of the exporter (mirrors of odedsl.diagnostics.CODES entries to be).
E_NAME = "E260"  # a spec name cannot be used in generated code
E_OUTPUT = "E261"  # an output path is refused


class Code(str):
    """A fragment of Python source built only from vetted parts (see the module docstring)."""

    __slots__ = ()


def refuse(code: str, message: str, hint: str | None = None) -> DslError:
    """The error the exporter raises for a name or path it will not write."""
    return DslError([Diagnostic(code, message, None, hint)])


def ident(name: object, what: str, origin: str | None = None) -> Code:
    """A spec identifier, checked against :data:`IDENTIFIER` and Python's keywords."""
    at = f" ({where(origin)})" if origin else ""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise refuse(
            E_NAME,
            f"{what} {name!r}{at} is not an identifier the exporter accepts",
            "names must match [A-Za-z_][A-Za-z0-9_]* and have at most 64 characters",
        )
    if keyword.iskeyword(name):
        raise refuse(E_NAME, f"{what} '{name}'{at} is a Python keyword", "rename it in the spec")
    return Code(name)


def quoted(name: object, what: str, origin: str | None = None) -> Code:
    """A vetted identifier as a string literal (``"conv1"``)."""
    return Code(f'"{ident(name, what, origin)}"')


def literal(value: object) -> Code:
    """``repr`` of an int, float or bool (tuples of them, ``None``); anything else is refused."""
    if value is None or isinstance(value, bool):
        return Code(repr(value))
    if isinstance(value, int):
        return Code(repr(int(value)))
    if isinstance(value, float):
        if math.isnan(value):
            return Code('float("nan")')
        if math.isinf(value):
            return Code('float("inf")' if value > 0 else '-float("inf")')
        return Code(repr(float(value)))
    if isinstance(value, tuple | list):
        items = [literal(v) for v in value]
        return Code(f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})")
    raise refuse(E_NAME, f"a value of type {type(value).__name__} cannot be written as a literal")


def comment(text: object, limit: int = _MAX_COMMENT) -> Code:
    """One line of comment or docstring text: a whitelist of characters, quotes and control
    characters replaced by ``?``, at most ``limit`` characters."""
    out = "".join(c if c.isalnum() or c in _COMMENT_PUNCTUATION else "?" for c in str(text))
    out = " ".join(out.split())
    return Code(out if len(out) <= limit else out[: limit - 1] + "…")


def paragraph(text: object, width: int = 92, limit: int = 600) -> list[Code]:
    """:func:`comment` text wrapped into lines of at most ``width`` characters."""
    return [Code(line) for line in textwrap.wrap(comment(text, limit), width)]


def file_label(path: object) -> Code:
    """The base name of a spec file, reduced to ``[A-Za-z0-9_.-]`` and 40 characters."""
    base = _FILE_CHARS.sub("_", re.split(r"[\\/]", str(path))[-1]) or "spec"
    return Code(base if len(base) <= 40 else f"{base[:30]}~{base[-9:]}")


def where(origin: str | None) -> Code:
    """``file:line:col`` of a spec origin as ``basename:line:col`` (sanitised)."""
    if not origin:
        return Code("?")
    parts = origin.rsplit(":", 2)
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return Code(f"{file_label(origin)}")
    return Code(f"{file_label(parts[0])}:{int(parts[1])}:{int(parts[2])}")


def camel(name: str) -> str:
    """``heun_net`` → ``HeunNet`` (class names; ``name`` is a vetted identifier)."""
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p) or "Network"


class Namespace:
    """Module-level names of one generated file: each claimed once, never a builtin."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._owner: dict[str, str] = dict.fromkeys(taken, "the generated code")

    def claim(self, name: str, what: str) -> Code:
        code = ident(name, what)
        if name in BUILTINS:
            raise refuse(E_NAME, f"{what} '{name}' would shadow the Python builtin", "rename it")
        if name in self._owner:
            raise refuse(
                E_NAME,
                f"{what} '{name}' clashes with {self._owner[name]} in the generated module",
                "rename it in the spec",
            )
        self._owner[name] = what
        return code

    def __contains__(self, name: object) -> bool:
        return name in self._owner


class Locals:
    """Local variable names of one generated function: spec names kept where possible,
    suffixed with ``_`` when they would shadow a builtin, a keyword or a reserved name."""

    def __init__(self, reserved: Iterable[str]) -> None:
        self._used = set(reserved)

    def new(self, hint: str) -> Code:
        name = hint if IDENTIFIER.fullmatch(hint) and not hint.startswith("__") else "v"
        while name in self._used or name in BUILTINS or keyword.iskeyword(name):
            name += "_"
        self._used.add(name)
        return Code(name)
