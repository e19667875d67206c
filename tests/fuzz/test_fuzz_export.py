"""Differential: generated specs' exported code against ``odedsl.compile``.

For every generated spec, ``odedsl build`` is written twice, plain (importing
``odedsl.runtime``) and ``--standalone`` (its own copy of the runtime), and both files are
imported (``build()`` restating the spec's parameter overrides). In each backward mode the
spec allows (``store``, ``checkpoint(2)`` and, when every stage's inverse is exact,
``invert``) the compiled model and the two builds, in float64, must have the same
``state_dict`` keys, in the same order, and from the same seed the same initial values (the
layers are made in the same order). With the compiled model's weights moved off their initial
values (:func:`export.helpers.perturbed_state`: zero-initialised residual layers would make
every stage an identity map and hide the residuals' code) loaded into all three, one
train-mode forward and backward from the same random stream (dropout) must give the same
output, input gradient, parameter gradients, buffers (BatchNorm running statistics) and kinds
of warnings, and an eval-mode forward the same output.

The faces run the same operations in the same order, so equality is bitwise: no tolerance,
and no excuse for ill-posed points either (``check_modes_agree`` excuses invert against
store, where the reconstructed state differs from the stored one by rounding; here both faces
reconstruct it by the same operations). An invert-mode reconstruction the runtime's own check
finds off by more than 1e-10 must be refused by all three faces alike.

Default run: 10 examples of at most two stages. ``pytest -m slow``: 300 of up to three.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

# the export tests' helpers: pytest puts tests/, the root of both test packages, on sys.path
from export.helpers import import_file, perturbed_state, write
from hypothesis import given, settings
from torch import nn

import odedsl
import odedsl.export

from .harness import write_files
from .specgen import GeneratedSpec, valid_specs
from .test_fuzz_valid import FAST, check_validates

FACES = ("plain", "standalone")


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Import torch and build the parser once, so timings measure checking, not imports
    (standalone builds copy the runtime once per process: ``export.vendor``)."""
    odedsl.load_spec(Path(__file__).parents[2] / "specs" / "resnet.ode")


def _is_stage(module: nn.Module) -> bool:
    """An ODE stage of any face (a standalone file's ``OdeStage`` is its own class)."""
    return any(cls.__name__ == "OdeStage" for cls in type(module).__mro__)


def _run(model: nn.Module, x: torch.Tensor) -> dict[str, Any] | str:
    """One train-mode step (output, gradients, buffers after it, the kinds of warnings) and
    an eval-mode output; or the name of the error the step raised (an inversion the
    runtime's check refused)."""
    for module in model.modules():
        if _is_stage(module):
            module.check_inverse = 1e-10
    model.train()
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = model(x)
        try:
            (y.square().sum() + y.sum()).backward()
        except RuntimeError as err:
            if type(err).__name__ != "InversionDriftError":
                raise
            return type(err).__name__
    out = {"out": y.detach(), "x.grad": x.grad}
    # each face warns in its own words (a standalone file names its own classes): the kinds
    out["warnings"] = sorted(type(w.message).__name__ for w in caught)
    out |= {f"{k}.grad": p.grad for k, p in model.named_parameters() if p.grad is not None}
    out |= {f"{k}.buffer": b.detach().clone() for k, b in model.named_buffers()}
    model.eval()
    with torch.no_grad():
        torch.manual_seed(6)
        out["eval"] = model(x.detach())
    return out


def check_export_agrees(gen: GeneratedSpec) -> None:
    spec = check_validates(gen)
    exact = all(s.inverse in ("exact", "exact-unstable") for s in spec.network.stages)
    modes = ["store", "checkpoint(2)"] + (["invert"] if exact else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_files(root, gen.files)
        builds: dict[str, ModuleType] = {}
        for face in FACES:
            files = write(
                root / "main.ode", root / face, standalone=face == "standalone", **gen.overrides
            )
            builds[face] = import_file(files["net.py"])
        state: dict[str, torch.Tensor] = {}
        for mode in modes:
            torch.manual_seed(0)
            ref = odedsl.compile(spec, backward=mode, dtype=torch.float64)
            fresh = {k: v.clone() for k, v in ref.state_dict().items()}
            if not state:
                state = perturbed_state(ref)
            ref.load_state_dict(state)
            torch.manual_seed(1)
            x = torch.randn(3, *ref.input_shape, dtype=torch.float64)
            want = _run(ref, x)
            for face, module in builds.items():
                torch.manual_seed(0)
                net = module.build(backward=mode, dtype=torch.float64, **gen.overrides)
                where = f"{face}, {mode}"
                assert list(net.state_dict()) == list(fresh), where
                for name, value in net.state_dict().items():  # made in the same order
                    assert torch.equal(value, fresh[name]), f"{where}: initial {name}"
                net.load_state_dict(state)
                got = _run(net, x)
                if isinstance(want, str) or isinstance(got, str):
                    assert got == want, where
                    continue
                assert got.keys() == want.keys(), where
                assert got["warnings"] == want["warnings"], where
                for name, value in want.items():
                    if name != "warnings":
                        assert torch.equal(got[name], value), (
                            f"{where}: {name} differs by "
                            f"{(got[name] - value).abs().max().item():.3g}"
                        )


@settings(FAST, max_examples=10)
@given(valid_specs(max_stages=2))
def test_export_agrees_with_compile(gen: GeneratedSpec) -> None:
    check_export_agrees(gen)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=300, derandomize=False)
@given(valid_specs())
def test_export_agrees_with_compile_at_scale(gen: GeneratedSpec) -> None:
    check_export_agrees(gen)
