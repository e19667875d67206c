"""The odedsl runtime: ODE stages over residual modules, in store, checkpoint or invert mode.

Imports only torch and the standard library, so generated standalone code can carry it alone.
Names are imported on first use (PEP 562), as :mod:`odedsl`'s are: importing
:mod:`odedsl.runtime.stage` also imports ``torch._dynamo`` (its ``torch.compiler.disable``
runs at import), about a second that ``odedsl check``, whose integrators need only
:mod:`odedsl.runtime.program`, does not pay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from odedsl.runtime.compiled import StepCompiler
    from odedsl.runtime.errors import (
        AnchorWarning,
        ApproximateGradientWarning,
        InversionDriftError,
        InversionDriftWarning,
        NumericalFault,
        ParametersModifiedError,
        ShardedResidualError,
        TracedStageWarning,
    )
    from odedsl.runtime.invert import AnchorPlan, Invert
    from odedsl.runtime.memory import activation_bytes, cuda_activation_bytes
    from odedsl.runtime.modes import BackwardMode, Checkpoint, Store, parse_backward
    from odedsl.runtime.program import (
        AffineUpdate,
        CoefficientProbe,
        IntegratorProgram,
        InverseKind,
        ResidualCall,
        State,
        Step,
        SwapUpdate,
        Update,
    )
    from odedsl.runtime.stage import OdeStage, compile_steps
    from odedsl.runtime.weights import WeightSchedule, expand_state_dict

_EXPORTS = {
    "StepCompiler": "compiled",
    **dict.fromkeys(
        (
            "AnchorWarning",
            "ApproximateGradientWarning",
            "InversionDriftError",
            "InversionDriftWarning",
            "NumericalFault",
            "ParametersModifiedError",
            "ShardedResidualError",
            "TracedStageWarning",
        ),
        "errors",
    ),
    "AnchorPlan": "invert",
    "Invert": "invert",
    "activation_bytes": "memory",
    "cuda_activation_bytes": "memory",
    **dict.fromkeys(("BackwardMode", "Checkpoint", "Store", "parse_backward"), "modes"),
    **dict.fromkeys(
        (
            "AffineUpdate",
            "CoefficientProbe",
            "IntegratorProgram",
            "InverseKind",
            "ResidualCall",
            "State",
            "Step",
            "SwapUpdate",
            "Update",
        ),
        "program",
    ),
    "OdeStage": "stage",
    "compile_steps": "stage",
    "WeightSchedule": "weights",
    "expand_state_dict": "weights",
}

__all__ = [
    "AffineUpdate",
    "AnchorPlan",
    "AnchorWarning",
    "ApproximateGradientWarning",
    "BackwardMode",
    "Checkpoint",
    "CoefficientProbe",
    "IntegratorProgram",
    "InverseKind",
    "InversionDriftError",
    "InversionDriftWarning",
    "Invert",
    "NumericalFault",
    "OdeStage",
    "ParametersModifiedError",
    "ResidualCall",
    "ShardedResidualError",
    "State",
    "Step",
    "StepCompiler",
    "Store",
    "SwapUpdate",
    "TracedStageWarning",
    "Update",
    "WeightSchedule",
    "activation_bytes",
    "compile_steps",
    "cuda_activation_bytes",
    "expand_state_dict",
    "parse_backward",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
