"""`import "file.ode"`: load a spec and the files it imports, confined to its own folder tree.

Rules: paths are relative to the importing file; absolute paths, and paths that resolve outside
the root folder (the folder of the spec given to odedsl, symlinks resolved), are refused; a
file imported twice is loaded once; a cycle is an error naming the chain; chains deeper than
``Limits.max_import_depth`` are refused.
"""

from __future__ import annotations

import difflib
import errno
import itertools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from odedsl.diagnostics import Diagnostic, Diagnostics, DslError, SourceFile, Span
from odedsl.limits import Limits
from odedsl.syntax import ast
from odedsl.syntax.parse import parse_counted


@dataclass(frozen=True)
class LoadedModule:
    path: Path | None  # None for text given directly
    module: ast.Module


def read_spec_file(path: Path, limits: Limits, span: Span | None = None) -> str:
    """Read a spec file as UTF-8 text, refusing what is missing, huge or binary."""
    try:
        size = path.stat().st_size
        kind = None if path.is_file() else "a directory" if path.is_dir() else "not a regular file"
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        kind = "no such file"
    if kind is not None:  # a device or a FIFO could block or never end: only regular files
        hint = _NOT_READ[kind]
        if kind == "no such file" and span is None:  # not an import: a path from the caller
            hint += " (a relative path starts from the current folder)"
        raise DslError([Diagnostic("E110", f"cannot read '{path}': {kind}", span, hint)])
    if size > limits.max_spec_bytes:
        # located at the importing statement, or at 1:1 of the file itself (never read)
        raise over_the_limit(f"'{path}' is {size:,} bytes", str(path), limits, span)
    try:
        return decode_spec(path.read_bytes(), str(path), "save the file as UTF-8")
    except OSError as exc:
        hint = (
            "make the file readable, e.g. chmod u+r"
            if exc.errno in (errno.EACCES, errno.EPERM)
            else "check that the file can be read (its permissions, the disk it is on)"
        )
        raise DslError(
            [Diagnostic("E110", f"cannot read '{path}': {exc.strerror}", span, hint)]
        ) from None


def over_the_limit(what: str, name: str, limits: Limits, span: Span | None = None) -> DslError:
    """The E101 refusal of spec text over ``ODEDSL_MAX_SPEC_BYTES``: located at ``span`` (an
    importing statement) or at 1:1 of ``name`` itself, which is never read."""
    where = span or Span.at_start(SourceFile(name, ""))
    return DslError(
        [
            Diagnostic(
                "E101",
                f"{what}, over the limit of {limits.max_spec_bytes:,}",
                where,
                "split it into files joined with `import`, or raise ODEDSL_MAX_SPEC_BYTES",
            )
        ]
    )


def decode_spec(data: bytes, name: str, hint: str) -> str:
    """Spec bytes as UTF-8 text; anything else is E110 located at the bad byte (the text shown
    decoded with replacement characters), so a file and a pipe are refused alike."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", "replace")
        offset = len(data[: exc.start].decode("utf-8"))  # the valid text before the byte
        where = Span.at_offset(SourceFile(name, text), offset)
        message = f"{_quoted(name)} is not UTF-8 text (byte {exc.start}: 0x{data[exc.start]:02x})"
        raise DslError([Diagnostic("E110", message, where, hint)]) from None


def _quoted(name: str) -> str:
    """A file's name in quotes; a stream's ``<stdin>`` as it is."""
    return name if name.startswith("<") else f"'{name}'"


#: What to do about a path that is no regular file (by what it is).
_NOT_READ = {
    "no such file": "check the file name and the folders on the way to it",
    "a directory": "name the .ode file inside the folder",
    "not a regular file": "odedsl reads regular files only, not devices or pipes",
}


def load_with_imports(
    text: str, filename: str, path: Path | None, root: Path, limits: Limits
) -> list[LoadedModule]:
    """Parse ``text`` and, transitively, its imports; the main module comes first. The token
    budget (``Limits.max_tokens``) is shared by all of them, which bounds the parse time of a
    spec whatever it imports."""
    main, tokens = parse_counted(text, filename, limits=limits)
    budget = [limits.max_tokens - tokens]
    loaded: list[LoadedModule] = [LoadedModule(path, main)]
    seen: dict[Path, ast.Module] = {}
    if path is not None:
        seen[path.resolve()] = main
    diags = Diagnostics()
    root = root.resolve()

    def visit(module: ast.Module, here: Path, chain: list[Path]) -> None:
        for imp in module.imports:
            target = _resolve(imp, here, root, diags, from_text=module is main and path is None)
            if target is None:
                continue
            if target in chain:
                cycle = " → ".join(p.name for p in [*chain[chain.index(target) :], target])
                diags.error(
                    "E112",
                    f"import cycle: {cycle}",
                    imp.span,
                    "move the shared definitions into a third file both import",
                )
                continue
            if len(chain) >= limits.max_import_depth:
                diags.error(
                    "E113",
                    f"import chain deeper than {limits.max_import_depth} files",
                    imp.span,
                    "flatten the imports, or raise ODEDSL_MAX_IMPORT_DEPTH",
                )
                continue
            if target in seen:
                continue
            if len(seen) >= limits.max_imports:
                diags.error(
                    "E113",
                    f"more than {limits.max_imports} files imported",
                    imp.span,
                    "merge small files, or raise ODEDSL_MAX_IMPORTS",
                )
                continue
            try:
                child_text = read_spec_file(target, limits, imp.span)
                name = _display(target, root)
                child, tokens = parse_counted(child_text, name, limits=limits, budget=budget[0])
                budget[0] -= tokens
            except DslError as err:
                for diagnostic in err.diagnostics:
                    diags.add(diagnostic)
                continue
            seen[target] = child
            loaded.append(LoadedModule(target, child))
            visit(child, target.parent, [*chain, target])

    start = path.resolve() if path is not None else root / filename
    visit(main, start.parent, [start])
    diags.raise_if_errors()
    return loaded


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return path.name


def _resolve(
    imp: ast.ImportDecl, here: Path, root: Path, diags: Diagnostics, *, from_text: bool = False
) -> Path | None:
    """The file ``imp`` names, or None with its refusal in ``diags``. ``from_text``: the
    importing spec is text, not a file (stdin, a string), whose imports start from the
    current folder: the hints say so rather than name a file's folder it does not have."""
    relative_to = "the current folder (the spec is text, not a file)" if from_text else None
    raw = imp.path
    pure = PurePosixPath(raw)
    if not raw or "\\" in raw or "\x00" in raw or ":" in raw:
        diags.error(
            "E111",
            f"import path {raw!r} is not a relative path",
            imp.span,
            f'write a path relative to {relative_to or "this file"}, with "/" between folders',
        )
        return None
    if pure.is_absolute() or raw.startswith("~"):
        diags.error(
            "E111",
            f"absolute import path {raw!r}",
            imp.span,
            f"imports are relative to {relative_to}"
            if relative_to
            else "imports are relative to the importing file, inside the spec's folder",
        )
        return None
    if pure.suffix != ".ode":
        diags.error(
            "E111",
            f"import path {raw!r} does not name a .ode file",
            imp.span,
            f'write the extension: import "{raw}.ode"'
            if not pure.suffix
            else "only spec files are imported: their names end in .ode",
        )
        return None
    try:
        target = (here / pure).resolve()
        is_file = target.is_relative_to(root) and target.is_file()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long for the system
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        diags.error(
            "E110",
            f"imported file {raw!r} cannot be opened: {reason}",
            imp.span,
            "check the file name and any symbolic links on the way to it",
        )
        return None
    if not target.is_relative_to(root):
        diags.error(
            "E111",
            f"import {raw!r} leaves the spec's folder",
            imp.span,
            f"imports are confined to {root.name}/ and its subfolders",
        )
        return None
    if not is_file:
        hint = _missing_hint(target, relative_to or "the importing file's folder")
        diags.error("E110", f"imported file {raw!r} not found", imp.span, hint)
        return None
    return target


def _missing_hint(target: Path, relative_to: str) -> str:
    """A sibling .ode file close to the missing one's name, or where the path was looked up."""
    try:
        found = itertools.islice(target.parent.glob("*.ode"), 1000)
        siblings = [p.name for p in found if p.name != target.name and p.is_file()]
    except OSError:
        siblings = []
    close = difflib.get_close_matches(target.name, siblings, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}' (in the same folder)?"
    return f"the path is relative to {relative_to}"
