"""The odedsl runtime: ODE stages over residual modules, in store, checkpoint or invert mode.

Imports only torch and the standard library, so generated standalone code can carry it alone.
"""

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
