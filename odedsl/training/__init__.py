"""Training and measuring compiled networks: ``odedsl train``, ``gradcheck`` and ``plot``.

:func:`train` fits a spec to a data set and trains it (``odedsl train`` is a thin layer over
it); :func:`gradient_errors` compares each stage's backward mode with ``store`` in float64;
:func:`depth_sweep` and :func:`plot_sweep` draw that error against depth (seed 000, Fig. 3c).
Names are imported on first use, so the loop can run on any ``nn.Module`` without the front end.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from odedsl.training.api import train
    from odedsl.training.config import TrainConfig, TrainResult
    from odedsl.training.data import DataBundle, load_data
    from odedsl.training.gradcheck import StageError, gradient_errors
    from odedsl.training.plot import depth_sweep, plot_sweep

_EXPORTS = {
    "train": "odedsl.training.api",
    "TrainConfig": "odedsl.training.config",
    "TrainResult": "odedsl.training.config",
    "DataBundle": "odedsl.training.data",
    "load_data": "odedsl.training.data",
    "StageError": "odedsl.training.gradcheck",
    "gradient_errors": "odedsl.training.gradcheck",
    "depth_sweep": "odedsl.training.plot",
    "plot_sweep": "odedsl.training.plot",
}

__all__ = [
    "DataBundle",
    "StageError",
    "TrainConfig",
    "TrainResult",
    "depth_sweep",
    "gradient_errors",
    "load_data",
    "plot_sweep",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'odedsl.training' has no attribute {name!r}")
