"""The runtime source a standalone module carries: ``odedsl/runtime/*.py`` in dependency order.

Each needed runtime module is copied verbatim except for its imports: intra-package imports
are dropped (the names live in the same file now), external ones are hoisted, merged and
rendered once at the top (:class:`Imports`). An external name that would clash with a name
another module defines (``collections.abc.Sequence`` against the runtime's ``Sequence`` layer)
is imported under an alias and renamed, token by token, in its module. Two modules defining the
same top-level name are refused, so a runtime change that breaks the merge fails the build.
"""

from __future__ import annotations

import ast
import functools
import io
import sys
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import odedsl.runtime
from odedsl.export.safety import BUG, Code, refuse

PACKAGE = "odedsl.runtime"
RUNTIME_DIR = Path(odedsl.runtime.__file__).parent
#: The modules a generated network uses directly; their dependencies come along.
ROOTS = ("stage", "layers", "program", "weights", "modes")
LINE_LENGTH = 100  # the project's ruff line length, which generated files keep to
#: The hint of a runtime that cannot be merged: a change to odedsl.runtime broke the merge.
MERGE_BUG = (
    f"{BUG}: its runtime cannot be copied into one file; a build without --standalone "
    "(standalone=False) does not copy it"
)


class Imports:
    """Imports of one generated file, written in the order ``ruff``'s isort rules expect."""

    def __init__(self) -> None:
        self.modules: dict[str, str | None] = {}  # "torch.nn.functional" -> "F"
        self.names: dict[str, dict[str, str | None]] = {}  # "torch" -> {"nn": None}

    def copy(self) -> Imports:
        new = Imports()
        new.modules = dict(self.modules)
        new.names = {m: dict(names) for m, names in self.names.items()}
        return new

    def add_module(self, module: str, alias: str | None = None) -> None:
        self.modules[module] = alias

    def add(self, module: str, name: str, alias: str | None = None) -> None:
        self.names.setdefault(module, {})[name] = alias

    def bound(self) -> dict[str, str]:
        """Bound name → what it refers to (``"F" -> "torch.nn.functional"``)."""
        out = {(a or m.split(".")[0]): m for m, a in self.modules.items()}
        for m, names in self.names.items():
            out.update({(a or n): f"{m}.{n}" for n, a in names.items()})
        return out

    def render(self, first_party: tuple[str, ...] = ("odedsl",)) -> Code:
        sections: dict[int, list[str]] = {0: [], 1: [], 2: [], 3: []}

        def section(module: str) -> int:
            top = module.split(".")[0]
            if top == "__future__":
                return 0
            if top in sys.stdlib_module_names:
                return 1
            return 3 if top in first_party else 2

        for m, alias in sorted(self.modules.items(), key=lambda kv: kv[0].lower()):
            sections[section(m)].append(f"import {m}" + (f" as {alias}" if alias else ""))
        for m, names in sorted(self.names.items(), key=lambda kv: kv[0].lower()):
            plain = sorted((n for n, a in names.items() if not a), key=_member_key)
            line = f"from {m} import {', '.join(plain)}"
            if len(line) > LINE_LENGTH:  # isort's wrapping: one name per line, trailing comma
                line = f"from {m} import (\n" + "".join(f"    {n},\n" for n in plain) + ")"
            if plain:
                sections[section(m)].append(line)
            aliased = sorted(
                ((n, a) for n, a in names.items() if a), key=lambda na: _member_key(na[0])
            )
            sections[section(m)].extend(f"from {m} import {n} as {a}" for n, a in aliased)
        blocks = ["\n".join(lines) for _, lines in sorted(sections.items()) if lines]
        return Code("\n\n".join(blocks))


def _member_key(name: str) -> tuple[int, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then functions and variables."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name.lower())


@dataclass(frozen=True)
class _Import:
    """``import module as alias`` (``name`` None) or ``from module import name as alias``."""

    module: str
    name: str | None
    alias: str | None

    @property
    def bound(self) -> str:
        return self.alias or (self.name or self.module.split(".")[0])

    @property
    def ref(self) -> str:
        if self.name is not None:
            return f"{self.module}.{self.name}"
        return self.module if self.alias else self.module.split(".")[0]


@dataclass
class _Module:
    name: str
    text: str
    tree: ast.Module
    deps: set[str] = field(default_factory=set)  # runtime modules it imports
    defines: set[str] = field(default_factory=set)
    imports: list[_Import] = field(default_factory=list)  # external imports


def _load(name: str) -> _Module:
    text = (RUNTIME_DIR / f"{name}.py").read_text(encoding="utf-8")
    mod = _Module(name, text, ast.parse(text))
    for node in mod.tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if not node.module.startswith(PACKAGE + "."):
                    mod.imports.append(_Import(node.module, a.name, a.asname))
                elif a.asname and a.asname != a.name:
                    raise refuse(
                        "E260",
                        f"runtime module {name}: aliased import of {a.name}",
                        hint=MERGE_BUG,
                    )
                else:
                    mod.deps.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PACKAGE):
                    raise refuse(
                        "E260", f"runtime module {name}: `import {a.name}`", hint=MERGE_BUG
                    )
                mod.imports.append(_Import(a.name, None, a.asname))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            mod.defines.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            mod.defines.update(t.id for t in targets if isinstance(t, ast.Name))
    return mod


def _order(roots: tuple[str, ...]) -> list[_Module]:
    loaded: dict[str, _Module] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in loaded:
            loaded[name] = _load(name)
            todo.extend(sorted(loaded[name].deps))
    order: list[_Module] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise refuse(
                "E260", f"runtime import cycle: {' -> '.join((*path, name))}", hint=MERGE_BUG
            )
        for dep in sorted(loaded[name].deps):
            visit(dep, (*path, name))
        done.add(name)
        order.append(loaded[name])

    for name in sorted(loaded):
        visit(name, ())
    return order


@dataclass(frozen=True)
class Vendored:
    """The runtime as one block of source, the imports it needs and the names it defines."""

    source: Code
    imports: Imports
    defines: frozenset[str]
    modules: tuple[str, ...]


def vendor(roots: tuple[str, ...] = ROOTS) -> Vendored:
    """Concatenate the runtime modules ``roots`` need (see the module docstring); once per
    process and runtime folder (half a second of parsing, the same for every build)."""
    return _vendor(roots, RUNTIME_DIR)


@functools.cache
def _vendor(roots: tuple[str, ...], runtime_dir: Path) -> Vendored:
    """:func:`vendor`; ``runtime_dir`` (what ``_load`` reads) is part of the cache key."""
    modules = _order(roots)
    owner: dict[str, str] = {}
    for m in modules:
        for name in m.defines:
            if name in owner:
                raise refuse(
                    "E260",
                    f"runtime modules {owner[name]} and {m.name} both define {name}",
                    hint=MERGE_BUG,
                )
            owner[name] = m.name
    imports = Imports()
    chunks = []
    aliases: dict[str, str] = {}  # what an import refers to -> the name it is bound to
    for m in modules:
        renames: dict[str, str] = {}
        for imp in m.imports:
            if imp.module == "__future__":
                continue
            bound = aliases.get(imp.ref, imp.bound)
            while bound in owner or imports.bound().get(bound, imp.ref) != imp.ref:
                bound = f"_{bound}"
            aliases[imp.ref] = bound
            if bound != imp.bound:
                renames[imp.bound] = bound
            if imp.name is None:
                imports.add_module(imp.module, bound if bound != imp.ref.split(".")[0] else None)
            else:
                imports.add(imp.module, imp.name, bound if bound != imp.name else None)
        chunks.append(_body(m, renames))
    source = "\n\n\n".join(chunks)
    used = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    for bound in set(imports.bound()) - used:
        _drop(imports, bound)
    names = tuple(m.name for m in modules)
    return Vendored(Code(source), imports, frozenset(owner), names)


def _drop(imports: Imports, bound: str) -> None:
    for m, alias in list(imports.modules.items()):
        if (alias or m.split(".")[0]) == bound:
            del imports.modules[m]
    for m, names in list(imports.names.items()):
        for n, alias in list(names.items()):
            if (alias or n) == bound:
                del names[n]
        if not names:
            del imports.names[m]


def _body(m: _Module, renames: dict[str, str]) -> str:
    """The module without docstring, imports and ``if TYPE_CHECKING:`` blocks, names renamed."""
    lines = m.text.splitlines()
    drop: set[int] = set()
    doc = ast.get_docstring(m.tree, clean=False)
    for i, node in enumerate(m.tree.body):
        skip = isinstance(node, ast.Import | ast.ImportFrom) or (i == 0 and doc is not None)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skip = True
        if skip:
            assert node.end_lineno is not None
            drop.update(range(node.lineno - 1, node.end_lineno))
    kept = [line if i not in drop else None for i, line in enumerate(lines)]
    text = "\n".join(line for line in kept if line is not None)
    if renames:
        text = _rename(text, renames)
    header = [f"# {'-' * 96}", f"# {PACKAGE}.{m.name}"]
    for line in (doc or "").strip().splitlines():
        wrapped = textwrap.wrap(line, 96, subsequent_indent=" " * (len(line) - len(line.lstrip())))
        header += [f"# {w}" for w in wrapped] or ["#"]
    return "\n".join(header) + "\n" + _squeeze(text)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _squeeze(text: str) -> str:
    """Strip leading/trailing blank lines and runs of more than two blank lines."""
    out: list[str] = []
    for line in text.strip("\n").splitlines():
        if not line.strip() and len(out) >= 2 and not out[-1].strip() and not out[-2].strip():
            continue
        out.append(line.rstrip())
    return "\n".join(out)


def _rename(text: str, renames: dict[str, str]) -> str:
    """Rename NAME tokens (not attributes, not keyword arguments' names) in ``text``."""
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []
    prev: tokenize.TokenInfo | None = None
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME and tok.string in renames:
            after = tokens[i + 1] if i + 1 < len(tokens) else None
            attribute = prev is not None and prev.string == "."
            keyword_arg = (
                after is not None
                and after.string == "="
                and prev is not None
                and prev.string in "(,"
            )
            if not attribute and not keyword_arg:
                (row, col), (_, end) = tok.start, tok.end
                edits.append((row - 1, col, end, renames[tok.string]))
        if tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.NEWLINE):
            prev = tok
    for row, col, end, new in sorted(edits, reverse=True):
        lines[row] = lines[row][:col] + new + lines[row][end:]
    return "".join(lines)
