"""Export targets as data: which templates a target renders, into which files, with which flags.

A new target (say, a Lightning module) is one more :class:`Target` and its templates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFile:
    """One generated file: ``template`` rendered to ``name`` (``{module}``: the network's)."""

    template: str
    name: str
    role: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    files: tuple[OutputFile, ...]
    flags: tuple[str, ...] = ()  # options the templates read from the context


PYTORCH = Target(
    "pytorch",
    "a readable PyTorch module of the network and an editable training script",
    (
        OutputFile("model.py.j2", "{module}.py", "the network"),
        OutputFile("train.py.j2", "train_{module}.py", "its training script"),
    ),
    flags=("standalone",),
)

TARGETS = {t.name: t for t in (PYTORCH,)}
