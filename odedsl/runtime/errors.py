"""Errors and warnings the runtime raises, each naming the stage (and layer) at fault.

A numerical fault deep inside a backward pass is useless without its place: every class here
carries the stage name and, where known, the layer, so the message points at the spec.
"""

from __future__ import annotations

import os

#: False in a standalone file (``odedsl build --standalone``), which carries this runtime
#: without odedsl: its messages then name the file's own copies of the runtime's functions,
#: and odedsl's commands as needing odedsl installed.
WITH_ODEDSL = __name__.startswith("odedsl.")


def runtime_name(name: str) -> str:
    """How a message names a function or class of the runtime: ``odedsl.runtime.<name>``, or,
    in a standalone file, the copy that file defines."""
    if WITH_ODEDSL:
        return f"odedsl.runtime.{name}"
    return f"{name} (defined in {os.path.basename(__file__)})"


def odedsl_command(command: str) -> str:
    """An ``odedsl`` command in a message; a standalone file's user may not have odedsl."""
    return f"`{command}`" if WITH_ODEDSL else f"`{command}` (with odedsl installed)"


class NumericalFault(RuntimeError):
    """A non-finite or drifting value in a stage, found at ``layer`` (``None``: unknown);
    ``hint`` (also the message's last line) says what to do about it."""

    def __init__(
        self, message: str, *, stage: str, layer: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)
        self.stage = stage
        self.layer = layer
        self.hint = hint


class InversionDriftError(NumericalFault):
    """An exact inverse reconstructed the stage input with more than the tolerated error.

    For ``exact`` kinds this means the forward changed between the forward and the backward
    pass (weights edited in place, non-replayed randomness) or rounding was amplified.
    """

    def __init__(self, message: str, *, stage: str, relative_error: float) -> None:
        super().__init__(message, stage=stage, layer=0)
        self.relative_error = relative_error


class InversionDriftWarning(UserWarning):
    """An approximate inverse drifted further than the tolerance from the true stage input."""

    def __init__(self, message: str, *, stage: str, relative_error: float) -> None:
        super().__init__(message)
        self.stage = stage
        self.relative_error = relative_error


class AnchorWarning(UserWarning):
    """Invert mode's measured anchors cost as much memory as ``store`` (an anchor at every
    layer): the inverse grows rounding too fast for anything sparser."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class ApproximateGradientWarning(UserWarning):
    """Once per stage: backward invert over an integrator whose inverse is the reverse-time
    approximation (seed 000, eq. 6) trains on approximate gradients; the spec says so in
    ``odedsl check``, and a script calling the API is told here."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class TracedStageWarning(UserWarning):
    """``torch.jit.trace`` (and the TorchScript ONNX exporter) or a ``torch.func`` transform
    took a stage whose backward mode neither can hold: the layers ran as plain operations,
    so that backward stores every layer, as ``store`` does (the gradients are exact)."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class ParametersModifiedError(RuntimeError):
    """A stage's parameter was modified in place between a forward and its backward (an
    optimizer step before ``backward()``). ``store`` refuses this through autograd's version
    counters for every tensor autograd saved (a weight; a bias edit passes there);
    ``checkpoint`` and ``invert`` re-run the residuals in backward, so they would
    differentiate weights the forward did not use, and refuse it for every parameter."""

    def __init__(self, message: str, *, stage: str, parameter: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.parameter = parameter


class ShardedResidualError(RuntimeError):
    """A module inside a ``checkpoint`` or ``invert`` stage is sharded by FSDP on its own
    (``fully_shard(residual)``, or an FSDP1 wrapper). Those modes re-run the residuals inside
    the stage's backward, where FSDP neither gathers their weights (checkpoint failed with
    DTensor's mixed-tensor error) nor reduces their gradients (invert's came back ``None``, so
    the optimizer skipped them without a word). Sharding the stage or a module above it works:
    its weights are then gathered for the stage's whole forward and backward."""

    def __init__(self, message: str, *, stage: str, module: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.module = module
