"""Resource limits checked before anything is allocated.

Every bound is a field of :class:`Limits`; the defaults suit one GPU. Override them from Python
(``odedsl.load_spec(path, limits=Limits(max_depth=10**6))``) or from the environment
(``ODEDSL_MAX_DEPTH=1000000``): each field reads ``ODEDSL_<FIELD NAME IN CAPITALS>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from odedsl.diagnostics import Diagnostic, DslError

#: Limits that may be 0, meaning none allowed (no imports, no block calling a block); the
#: others bound a size, where 0 would refuse every spec.
ZERO_ALLOWED = frozenset({"max_import_depth", "max_imports", "max_block_nesting"})


def _lowest(name: str) -> int:
    return 0 if name in ZERO_ALLOWED else 1


def _allowed(name: str) -> str:
    return "an integer, 0 or more" if name in ZERO_ALLOWED else "a positive integer"


def limit_from_text(raw: str) -> int | None:
    """An ``ODEDSL_MAX_*`` value: 1 to 100 ASCII digits (surrounding blanks allowed), else
    ``None`` (the length cap keeps ``int`` below Python's 4300-digit limit, which raises).
    The runtime, which carries no front end, reads ``ODEDSL_MAX_DEPTH`` by the same rule
    (:func:`odedsl.runtime.weights.limit_from_text`; this module stays free of torch)."""
    text = raw.strip()
    if 1 <= len(text) <= 100 and text.isascii() and text.isdigit():
        return int(text)
    return None


@dataclass(frozen=True)
class Limits:
    max_spec_bytes: int = 1_000_000  # one spec file
    max_tokens: int = 10_000  # tokens of a spec and its imports together (parse time)
    max_nesting: int = 64  # expression / block nesting in the syntax tree
    max_import_depth: int = 16  # length of an import chain
    max_imports: int = 256  # files loaded for one spec
    max_depth: int = 100_000  # layers in one ODE stage
    max_width: int = 65_536  # channels or features of any layer
    max_spatial: int = 16_384  # any spatial extent
    max_kernel: int = 64  # kernel size of a convolution or pooling
    max_parameters: int = 2_000_000_000  # trainable parameters of the whole network
    max_block_expansion: int = 10_000  # layers + block calls in one sequence, blocks expanded
    max_total_layers: int = 100_000  # layers + block calls of all sequences of a network
    max_block_nesting: int = 32  # blocks calling blocks

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Limits({f.name}={value!r}): must be {_allowed(f.name)}")
            if value < _lowest(f.name):
                raise ValueError(f"Limits({f.name}={value!r}): must be {_allowed(f.name)}")

    @classmethod
    def from_env(cls, base: Limits | None = None) -> Limits:
        """Defaults overridden by ``ODEDSL_MAX_*`` environment variables (integers)."""
        base = base or cls()
        changes: dict[str, int] = {}
        for f in fields(cls):
            raw = os.environ.get(f"ODEDSL_{f.name.upper()}")
            if raw is not None:
                value = limit_from_text(raw)
                if value is None or value < _lowest(f.name):
                    raise DslError(
                        [
                            Diagnostic(
                                "E130",
                                f"environment variable ODEDSL_{f.name.upper()}="
                                f"{raw if len(raw) <= 40 else raw[:37] + '...'!r} "
                                f"is not {_allowed(f.name)}",
                                None,
                                f"write it in ASCII digits, e.g. ODEDSL_{f.name.upper()}="
                                f"{f.default} (the default), or unset it",
                            )
                        ]
                    )
                changes[f.name] = value
        return replace(base, **changes)
