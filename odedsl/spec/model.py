"""The validated spec: a pydantic v2 model of a whole network, every size and option resolved.

It is what the compiler consumes and what ``odedsl check --json`` prints. Every node keeps
``origin`` (``file:line:col``) so generated code and later errors can point back at the spec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

InverseKind = Literal["exact", "exact-unstable", "approximate", "none"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerSpec(Model):
    """One concrete layer after block expansion."""

    kind: str
    name: str  # readable module name, unique in its sequence: conv1, bn2, ...
    args: dict[str, Any]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    parameters: int
    origin: str
    ref: str | None = None  # transpose(K): the module name of K in the same sequence


class SequenceSpec(Model):
    layers: tuple[LayerSpec, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    parameters: int
    stochastic: bool = False


class SectionSpec(Model):
    part: Literal["stem", "transition", "head"]
    name: str  # module name in the graph: stem, transition1, head
    body: SequenceSpec
    origin: str


class StageSpec(Model):
    part: Literal["stage"] = "stage"
    name: str
    integrator: str
    integrator_params: dict[str, float]
    depth: int
    step: float
    step_fixed: bool = False  # a `step` clause: set_depth keeps h (else h = 1/N follows N)
    weights: Literal["tied", "untied", "shared", "interpolated"]
    weights_k: int | None = None
    backward: Literal["store", "checkpoint", "invert"]
    checkpoint_every: int | None = None
    residuals: dict[str, SequenceSpec]
    inverse: InverseKind
    inverse_reason: str | None = None
    #: where the inverse's coefficients fail at this depth (invert is then refused, E240; store
    #: and checkpoint never run the inverse), or None
    inverse_fault: str | None = None
    shape: tuple[int, ...]  # the stage's input (= output) shape
    state_shape: tuple[int, ...]  # one state variable's shape (channels split for y, z)
    slots: int  # residual copies per residual function (weights in depth)
    parameters: int
    origin: str
    forward_equations: tuple[str, ...] = ()
    inverse_equations: tuple[str, ...] = ()

    @property
    def backward_mode(self) -> str:
        """The backward mode as written: ``store``, ``invert`` or ``checkpoint(k)``."""
        every = self.checkpoint_every
        return self.backward if every is None else f"checkpoint({every})"


Part = SectionSpec | StageSpec


class NetworkSpec(Model):
    name: str
    params: dict[str, int | float | bool | str]
    input_kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    parts: tuple[Part, ...] = Field(default=())
    parameters: int
    origin: str

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        return tuple(p for p in self.parts if isinstance(p, StageSpec))

    def summary(self) -> dict[str, Any]:
        """The ``network`` object of ``odedsl check --json``."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "parameters": self.parameters,
            "params": self.params,
            "stages": [
                {
                    "name": s.name,
                    "integrator": s.integrator,
                    "depth": s.depth,
                    "step": s.step,
                    "weights": s.weights if s.weights_k is None else f"{s.weights}({s.weights_k})",
                    "backward": s.backward_mode,
                    "inverse": s.inverse,
                    "inverse_fault": s.inverse_fault,
                    "parameters": s.parameters,
                    "shape": list(s.shape),
                }
                for s in self.stages
            ],
        }
