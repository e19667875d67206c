"""``odedsl build``: a validated spec → readable PyTorch source.

::

    ValidatedSpec ──context (names vetted, literals rendered)──▶ ModelContext
        ──jinja2 templates (print Code only)──▶ <network>.py + train_<network>.py
        ──writer (confined to the folder, atomic, never over a hand-written file)

The network file holds one step class per integrator (its forward step and derived inverse as
plain code), one ``OdeStage`` subclass per stage, the network module and ``build()``. Its
outputs, gradients and ``state_dict`` keys equal those of :func:`odedsl.compile`'s module.
With ``standalone`` the odedsl runtime is copied into the file (:mod:`odedsl.export.vendor`).
"""

from __future__ import annotations

import os
from pathlib import Path

import odedsl
from odedsl.export.context import model_context
from odedsl.export.render import render
from odedsl.export.targets import PYTORCH, Target
from odedsl.export.vendor import vendor
from odedsl.export.writer import write_all
from odedsl.spec.evaluate import Value
from odedsl.spec.load import load_spec
from odedsl.spec.validate import ValidatedSpec

__all__ = ["PYTORCH", "Target", "build", "render_files"]


def render_files(
    spec: ValidatedSpec, *, standalone: bool = False, target: Target = PYTORCH
) -> dict[str, str]:
    """File name → source text of every file ``target`` generates for ``spec``."""
    ctx = model_context(spec, vendor() if standalone else None)
    return {
        f.name.format(module=ctx.module): render(f.template, ctx, odedsl.__version__)
        for f in target.files
    }


def build(
    source: str | os.PathLike[str] | ValidatedSpec,
    out_dir: str | os.PathLike[str] = ".",
    *,
    standalone: bool = False,
    force: bool = False,
    network: str | None = None,
    **params: Value,
) -> list[Path]:
    """Generate the files of ``source`` into ``out_dir``; returns their paths.

    Raises :class:`odedsl.DslError` for a bad spec, a name that cannot be exported safely, or
    an output path that is refused (outside ``out_dir``, or a file odedsl did not generate).
    """
    spec = load_spec(source, network=network, **params)
    return write_all(Path(out_dir), render_files(spec, standalone=standalone), force=force)
