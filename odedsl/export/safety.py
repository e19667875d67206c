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

#: The hint of a refusal no spec, option or output folder can cause: an internal invariant of
#: the exporter (or of the runtime it copies) broke. tests/spec/test_hints.py lists these sites.
BUG = "this is an odedsl bug; please report it with the spec"
#: Where a spec names a residual function, for hints that ask to rename one.
RESIDUAL_FUNCTION = (
    "the residual function (where the integrator calls it, `NAME(x, t)`, and, if the stage "
    "names it, in `residual NAME = { ... }`)"
)
#: Names written into generated code: the rule :func:`ident` enforces, as hints state it.
NAME_RULE = (
    "names in generated code are ASCII letters, digits and _, not starting with a digit, "
    "at most 64 characters"
)


class Code(str):
    """A fragment of Python source built only from vetted parts (see the module docstring)."""

    __slots__ = ()


def refuse(code: str, message: str, *, hint: str) -> DslError:
    """The error the exporter raises for a name or path it will not write; ``hint`` says what
    to do (:data:`BUG` where no input can cause it)."""
    return DslError([Diagnostic(code, message, None, hint)])


def ident(name: object, what: str, origin: str | None = None, *, rename: str | None = None) -> Code:
    """A spec identifier, checked against :data:`IDENTIFIER` and Python's keywords.

    ``rename``: what the hint asks to rename in the spec (default ``the <what>``), for names
    written in more than one place or derived from a spec name (a class name from a stage's).
    """
    at = f" ({where(origin)})" if origin else ""
    target = rename or f"the {what}"
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise refuse(
            E_NAME,
            f"{what} {name!r}{at} is not an identifier the exporter accepts",
            hint=f"{NAME_RULE}: rename {target} in the spec to such a name",
        )
    if keyword.iskeyword(name):
        example = f", e.g. to '{name}_'" if rename is None else ""
        raise refuse(
            E_NAME,
            f"{what} '{name}'{at} is a Python keyword",
            hint=f"rename {target} in the spec{example}: Python keywords cannot name things "
            "in generated code",
        )
    return Code(name)


def quoted(
    name: object, what: str, origin: str | None = None, *, rename: str | None = None
) -> Code:
    """A vetted identifier as a string literal (``"conv1"``)."""
    return Code(f'"{ident(name, what, origin, rename=rename)}"')


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
    raise refuse(
        E_NAME,
        f"a value of type {type(value).__name__} cannot be written as a literal",
        hint=f"{BUG}: a validated spec holds only numbers and booleans where code is written",
    )


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
        #: name → (what it names, the spec name it derives from; None: the template's own)
        self._owner: dict[str, tuple[str, str | None]] = dict.fromkeys(
            taken, ("the generated code", None)
        )

    def claim(self, name: str, what: str, *, source: str) -> Code:
        """Claim ``name``, derived from ``source`` (the spec name, as a hint names it:
        ``"the stage 'body'"``), for ``what`` (``"stage class"``)."""
        derived = f"{source} (the {what} is derived from it)"
        code = ident(name, what, rename=derived)
        if name in BUILTINS:
            raise refuse(
                E_NAME,
                f"{what} '{name}' would shadow the Python builtin",
                hint=f"rename {derived} in the spec: the generated module must not shadow a "
                "Python builtin",
            )
        if name in self._owner:
            owner, other = self._owner[name]
            also = f", or {other} (the {owner} is derived from it)," if other else ""
            raise refuse(
                E_NAME,
                f"{what} '{name}' clashes with {owner} in the generated module",
                hint=f"rename {derived}{also} in the spec: each module-level name of the "
                "generated file must be distinct",
            )
        self._owner[name] = (what, source)
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
