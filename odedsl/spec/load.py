"""``load_spec``: a path or spec text → validated spec, with parameter overrides."""

from __future__ import annotations

import os
from pathlib import Path

from odedsl.diagnostics import Diagnostic, DslError
from odedsl.limits import Limits
from odedsl.spec.evaluate import Value
from odedsl.spec.validate import ValidatedSpec, validate
from odedsl.syntax.imports import load_with_imports, read_spec_file


def looks_like_path(source: str) -> bool:
    """Spec text has braces or newlines; a path has neither."""
    return "\n" not in source and "{" not in source


def load_spec(
    source: str | os.PathLike[str] | ValidatedSpec,
    *,
    network: str | None = None,
    limits: Limits | None = None,
    **params: Value,
) -> ValidatedSpec:
    """Parse, resolve imports and validate a spec; ``params`` override network parameters.

    ``source`` is a path to a ``.ode`` file, the text of a spec, or an already validated spec
    (returned as is when no override is given). Raises :class:`odedsl.DslError` listing every
    problem, located.
    """
    if isinstance(source, ValidatedSpec):
        if not params and network is None:
            return source
        raise TypeError("overrides need the spec's source text or path, not a validated spec")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"load_spec takes a path, a spec's text or a validated spec, "
            f"got {type(source).__name__}"
        )
    if network is not None and not isinstance(network, str):
        raise TypeError(f"network must be the name of a network (str), got {network!r}")
    if isinstance(source, str) and not source:  # Path("") is ".": "cannot read '.'"
        raise DslError(
            [
                Diagnostic(
                    "E110",
                    "the spec is an empty string",
                    None,
                    "pass the path of a .ode file (e.g. 'specs/resnet.ode') or a spec's text",
                )
            ]
        )
    limits = limits or Limits.from_env()
    if isinstance(source, os.PathLike) or looks_like_path(source):
        path = Path(source)
        text = read_spec_file(path, limits)
        modules = load_with_imports(text, str(source), path, path.resolve().parent, limits)
    else:
        return load_spec_text(source, "<spec>", network=network, limits=limits, params=params)
    return validate(modules, network=network, overrides=params, limits=limits)


def load_spec_text(
    text: str,
    name: str,
    *,
    network: str | None = None,
    limits: Limits | None = None,
    params: dict[str, Value] | None = None,
) -> ValidatedSpec:
    """:func:`load_spec` of a spec's text whatever it looks like (even one line without a
    brace, which ``load_spec`` would take for a path), its diagnostics naming the file
    ``name`` (``<stdin>``); imports resolve against the working directory."""
    limits = limits or Limits.from_env()
    modules = load_with_imports(text, name, None, Path.cwd(), limits)
    return validate(modules, network=network, overrides=params or {}, limits=limits)
