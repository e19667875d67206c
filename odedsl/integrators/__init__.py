"""The integrator algebra: update statements → classified step → derived inverse → fx graphs.

::

    IntegratorDecl ──lower──▶ IR statements ──derive──▶ exact | exact-unstable | approximate | none
                                                  └──emit──▶ fx graphs ──▶ IntegratorProgram

A user writes an integrator as update statements (``x += h * f(x, t)``); :func:`analyse`
checks it, :meth:`Integrator.classify` says what its inverse promises, and
:meth:`Integrator.program` hands the runtime the step and its inverse as GraphModules.
"""

from odedsl.integrators.emit import StepGraphs as StepGraphs
from odedsl.integrators.integrator import Classification as Classification
from odedsl.integrators.integrator import Integrator as Integrator
from odedsl.integrators.integrator import IntegratorGraphs as IntegratorGraphs
from odedsl.integrators.integrator import analyse as analyse
from odedsl.integrators.ir import MATH_FUNCTIONS as MATH_FUNCTIONS
from odedsl.integrators.library import standard_library as standard_library
from odedsl.integrators.lower import ParamSpec as ParamSpec

__all__ = [
    "MATH_FUNCTIONS",
    "Classification",
    "Integrator",
    "IntegratorGraphs",
    "ParamSpec",
    "StepGraphs",
    "analyse",
    "standard_library",
]
