"""Resource limits checked before anything is allocated.

Every bound is a field of :class:`Limits`; the defaults suit one GPU. Override them from Python
(``odedsl.load_spec(path, limits=Limits(max_depth=10**6))``) or from the environment
(``ODEDSL_MAX_DEPTH=1000000``): each field reads ``ODEDSL_<FIELD NAME IN CAPITALS>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from odedsl.diagnostics import Diagnostic, DslError


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

    @classmethod
    def from_env(cls, base: Limits | None = None) -> Limits:
        """Defaults overridden by ``ODEDSL_MAX_*`` environment variables (integers)."""
        base = base or cls()
        changes: dict[str, int] = {}
        for f in fields(cls):
            raw = os.environ.get(f"ODEDSL_{f.name.upper()}")
            if raw is not None:
                try:
                    changes[f.name] = int(raw)
                except ValueError:
                    raise DslError(
                        [
                            Diagnostic(
                                "E130",
                                f"environment variable ODEDSL_{f.name.upper()}={raw!r} "
                                "is not an integer",
                                None,
                            )
                        ]
                    ) from None
        return replace(base, **changes)
