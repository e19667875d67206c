"""Generated valid specs validate, compile and run; the generator is the independent reference.

For every generated spec: ``load_spec`` accepts it within the time budget, the validated
output shape is the one the generator computed by hand, the compiled model's parameter count
is the validator's, and a forward + backward pass on a random input of ``model.input_shape``
gives finite values of the generated output shape with gradients for the input.

Differential: the same weights give the same outputs, gradients and BatchNorm statistics in
``store``, ``checkpoint(2)`` and (exact inverses) ``invert`` modes.

Default run: 150 validated + 100 compiled + 40 differential examples.
``pytest -m slow``: 4,000 + 3,000 + 3,000.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings

import odedsl
from odedsl.runtime import InversionDriftError, InversionDriftWarning, OdeStage

from .harness import CHECK_BUDGET_S, load_checked, write_files
from .ill_posed import ill_posed_points
from .specgen import GeneratedSpec, valid_specs

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    # no explain phase: its line tracer slows checking tenfold and fakes time-budget failures
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Import torch and build the parser once, so timings measure checking, not imports."""
    odedsl.load_spec(Path(__file__).parents[2] / "specs" / "resnet.ode")


def check_validates(gen: GeneratedSpec) -> odedsl.ValidatedSpec:
    with tempfile.TemporaryDirectory() as tmp:
        texts = write_files(Path(tmp), gen.files)
        out = load_checked(Path(tmp) / "main.ode", texts, **gen.overrides)
    assert out.error is None, f"valid spec refused:\n{gen.text}\n{out.error}"
    assert out.cpu_s < CHECK_BUDGET_S, f"checking took {out.cpu_s:.2f} s"
    spec = out.spec
    assert spec is not None
    net = spec.network
    assert net.input_shape == gen.input_shape
    assert net.output_shape == gen.output_shape
    assert [s.name for s in net.stages] == [s["name"] for s in gen.stages]
    for stage, facts in zip(net.stages, gen.stages, strict=True):
        assert stage.shape == facts["shape"]
        assert stage.backward == facts["backward"].partition("(")[0]
        if facts["depth"] is not None:
            assert stage.depth == facts["depth"]
    return spec


def check_runs(gen: GeneratedSpec) -> None:
    """Compiles and runs one forward and backward: finite outputs and gradients, except
    gradients behind normalisations of numerically constant groups, whose 1/sqrt(eps)
    factors compound past float32 in plain autograd as well (``tests/fuzz/test_ill_posed.py``).
    """
    spec = check_validates(gen)
    model = odedsl.compile(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.network.parameters
    assert tuple(model.input_shape) == gen.input_shape
    x = torch.randn(2, *model.input_shape, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = model(x)
        assert tuple(y.shape) == (2, *gen.output_shape)
        assert torch.isfinite(y).all()
        y.square().mean().backward()
    for w in caught:  # an exact inverse that drifted: a find to pin, so show its spec
        if isinstance(w.message, InversionDriftWarning):
            files = "".join(f"\n--- {name} ---\n{text}" for name, text in gen.files.items())
            warnings.warn(f"fuzz find: {w.message}{files}", UserWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert x.grad is not None
    grads = {"input": x.grad} | {n: p.grad for n, p in model.named_parameters()}
    overflowed = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    if overflowed and ill_posed_points(model, lambda: model(x.detach()), norms_only=True):
        return  # chained 1/sqrt(eps) of constant groups: plain autograd's gradient is inf too
    assert not overflowed, overflowed


@settings(FAST, max_examples=150)
@given(valid_specs())
def test_generated_specs_validate(gen: GeneratedSpec) -> None:
    check_validates(gen)


@settings(FAST, max_examples=100)
@given(valid_specs(max_stages=2))
def test_generated_specs_compile_and_run(gen: GeneratedSpec) -> None:
    torch.manual_seed(0)
    check_runs(gen)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=4_000, derandomize=False)
@given(valid_specs())
def test_generated_specs_validate_at_scale(gen: GeneratedSpec) -> None:
    check_validates(gen)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=3_000, derandomize=False)
@given(valid_specs())
def test_generated_specs_compile_and_run_at_scale(gen: GeneratedSpec) -> None:
    torch.manual_seed(0)
    check_runs(gen)


def check_modes_agree(gen: GeneratedSpec) -> None:
    """Differential: the same weights in every backward mode. Checkpointing recomputes
    exactly, so outputs, gradients and running statistics equal ``store``'s; ``invert`` equals
    them too when every stage's inverse is exact (rounding only, float64).

    Excused in invert mode: a gradient disagreement when the ``store`` forward put a layer
    inside a stage on a point where the gradient is undefined or is rounding noise
    (:func:`ill_posed_points`: a ReLU input on its kink, a max-pool tie, a normalised group of
    variance below eps — zero-padded channels, a group a ReLU emptied), where a state
    reconstructed to within rounding (±1e-17 instead of 0) takes the other one-sided derivative
    or other noise; and networks whose reconstruction the runtime's own check finds off by
    more than 1e-10 (a normalisation of a nearly constant channel amplifies by 1/sqrt(eps) per
    layer, forward and inverse alike: a 16-orders ill-conditioned map, which "exact to
    rounding" cannot survive). Both are properties of inversion, not bugs; any other
    disagreement, and any disagreement of outputs or running statistics, fails.
    """
    spec = check_validates(gen)
    exact = all(s.inverse in ("exact", "exact-unstable") for s in spec.network.stages)
    modes = ["store", "checkpoint(2)"] + (["invert"] if exact else [])
    results = {}
    start: dict[str, torch.Tensor] = {}
    for mode in modes:
        model = odedsl.compile(spec, backward=mode, dtype=torch.float64)
        if not start:
            start = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(start)
        torch.manual_seed(1)
        x = torch.randn(3, *model.input_shape, dtype=torch.float64, requires_grad=True)
        for stage in model.modules():
            if isinstance(stage, OdeStage):
                stage.check_inverse = 1e-10
        if mode == "store":  # what the store forward saw, to replay it if needed
            store_input, store_rng = x.detach(), torch.get_rng_state()
        y = model(x)
        try:
            y.square().mean().backward()
        except InversionDriftError:
            assert mode == "invert"
            continue
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        results[mode] = (y.detach(), x.grad, grads, model.state_dict())
    ref_y, ref_gx, ref_grads, ref_state = results["store"]
    # gradients are compared on the scale of the largest: a normalisation of a constant
    # channel turns rounding noise into gradients of 1e-9 next to others of 1e7
    scale = max([ref_gx.abs().max().item(), *(g.abs().max().item() for g in ref_grads.values())])
    grad_tol = {"rtol": 1e-6, "atol": 1e-8 * max(1.0, scale)}
    tol = {"rtol": 1e-6, "atol": 1e-8}
    for mode in [m for m in modes[1:] if m in results]:
        y, gx, grads, state = results[mode]
        torch.testing.assert_close(y, ref_y, **tol, msg=f"{mode}: output")
        for k, v in ref_state.items():
            torch.testing.assert_close(state[k], v, **tol, msg=f"{mode}: {k}")
        assert grads.keys() == ref_grads.keys(), mode
        try:
            torch.testing.assert_close(gx, ref_gx, **grad_tol, msg=f"{mode}: input gradient")
            for k, g in ref_grads.items():
                torch.testing.assert_close(grads[k], g, **grad_tol, msg=f"{mode}: {k}")
        except AssertionError:
            if mode != "invert" or not _ill_posed_in_store(spec, start, store_input, store_rng):
                raise


def _ill_posed_in_store(
    spec: odedsl.ValidatedSpec,
    start: dict[str, torch.Tensor],
    x: torch.Tensor,
    rng: torch.Tensor,
) -> list[str]:
    """The ill-posed points the differential runs' ``store`` forward met: the same weights,
    input and random stream replayed."""
    model = odedsl.compile(spec, backward="store", dtype=torch.float64)
    model.load_state_dict(start)
    torch.set_rng_state(rng)
    return ill_posed_points(model, lambda: model(x))


@settings(FAST, max_examples=40)
@given(valid_specs(max_stages=2))
def test_backward_modes_agree(gen: GeneratedSpec) -> None:
    check_modes_agree(gen)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=3_000, derandomize=False)
@given(valid_specs())
def test_backward_modes_agree_at_scale(gen: GeneratedSpec) -> None:
    check_modes_agree(gen)
