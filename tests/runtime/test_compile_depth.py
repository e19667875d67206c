"""torch.compile whose cost does not grow with depth: one compiled graph per residual function,
reused by every layer, every weight schedule and any depth N; outputs, gradients and BatchNorm
statistics equal eager's in every mode."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from odedsl.runtime import OdeStage, WeightSchedule, compile_steps
from odedsl.runtime.errors import TracedStageWarning

from .programs import MLP, state_width
from .util import MODES, make_stage, max_param_error, run

SCHEDULES = (
    WeightSchedule("tied"),
    WeightSchedule("untied"),
    WeightSchedule("shared", 2),
    WeightSchedule("interpolated", 3),
)


class CountingBackend:
    """A torch.compile backend that runs graphs as traced and counts how many it was given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return gm.forward


def network(program: str, depth: int, schedule: WeightSchedule, mode: object, **kw) -> nn.Module:
    torch.manual_seed(0)
    stage = make_stage(program, depth, schedule=schedule, backward=mode, **kw)
    for p in stage.parameters():  # off zero initialisation, so every layer matters
        p.data.add_(0.3 * torch.randn_like(p))
    return nn.Sequential(nn.Linear(6, 8), stage, nn.Tanh(), nn.Linear(8, 2)).double()


def compiled_run(net: nn.Module, x: torch.Tensor, backend: object = "aot_eager"):
    """Residuals through ``compile_steps`` with ``backend``, the whole net under
    ``torch.compile`` with the same backend."""
    torch._dynamo.reset()
    module = compile_steps(copy.deepcopy(net), backend=backend)
    return run(torch.compile(module, backend=backend), x, copy_module=False), module


PROGRAMS = ("hamiltonian", "heun", "midpoint")
FULL = [(p, s, m) for p in PROGRAMS for s in SCHEDULES for m in MODES]
#: The default run covers every program, schedule and mode at least once; the slow job all.
QUICK = [(PROGRAMS[i % 3], SCHEDULES[i % 4], MODES[i % 3]) for i in range(12)]
CASES = [pytest.param(*case, marks=() if case in QUICK else pytest.mark.slow) for case in FULL]


@pytest.mark.parametrize(("program", "schedule", "mode"), CASES, ids=str)
def test_compiled_equals_eager(program: str, schedule: WeightSchedule, mode: object) -> None:
    net = network(program, 5, schedule, mode)
    x = torch.randn(10, 6, dtype=torch.float64)
    eager = run(net, x)
    compiled, module = compiled_run(net, x)
    torch.testing.assert_close(compiled.out, eager.out, rtol=1e-12, atol=1e-12)
    assert max_param_error(compiled, eager) < 1e-10
    stage: OdeStage = module[1]  # type: ignore[assignment]
    assert str(stage.backward_mode) == str(net[1].backward_mode)  # never another mode
    assert stage.step_compiler is not None and stage.step_compiler._fns  # really compiled
    for key, buf in module.named_buffers():  # BatchNorm statistics updated exactly once
        torch.testing.assert_close(buf, dict(eager.module.named_buffers())[key], msg=key)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_graph_count_does_not_grow_with_depth(mode: object) -> None:
    counts = []
    for depth in (2, 24):
        torch._dynamo.reset()
        outer, inner = CountingBackend(), CountingBackend()
        net = compile_steps(
            network("hamiltonian", depth, WeightSchedule("untied"), mode), backend=inner
        )
        x = torch.randn(10, 6, dtype=torch.float64)
        compiled = torch.compile(net, backend=outer)
        for _ in range(2):
            compiled(x).square().sum().backward()
        counts.append((outer.graphs, inner.graphs))
    assert counts[0] == counts[1], counts
    # per residual f, g: without grad, with grad, and with grad for an input that needs none
    assert counts[0][1] <= 6, counts


def test_depth_change_with_interpolated_weights_does_not_recompile() -> None:
    torch._dynamo.reset()
    backend = CountingBackend()
    net = compile_steps(
        network("heun", 4, WeightSchedule("interpolated", 3), "invert"), backend=backend
    )
    x = torch.randn(10, 6, dtype=torch.float64)
    compiled = torch.compile(net, backend=backend)
    compiled(x).sum().backward()
    before = backend.graphs
    reference = copy.deepcopy(net)
    for m in (net, reference):
        m[1].set_depth(32)
    assert net[1].depth == 32 and net[1].h == pytest.approx(1 / 32)
    got = run(compiled, x, copy_module=False)
    assert backend.graphs == before
    compile_steps(reference, enabled=False)
    want = run(reference, x)
    torch.testing.assert_close(got.out, want.out, rtol=1e-12, atol=1e-12)


def test_set_depth_refuses_untied_weights() -> None:
    stage = make_stage("euler", 4, schedule=WeightSchedule("untied"))
    with pytest.raises(ValueError, match="one slot per layer"):
        stage.set_depth(8)
    with pytest.raises(ValueError, match="positive integer"):
        make_stage("euler", 4, schedule=WeightSchedule("tied")).set_depth(0)


def test_set_depth_keeps_to_the_depth_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A depth of 10^12 would loop for days: refused like a spec's, with the same variable."""
    from odedsl import Limits
    from odedsl.runtime.weights import DEFAULT_MAX_DEPTH

    assert Limits().max_depth == DEFAULT_MAX_DEPTH
    stage = make_stage("euler", 4, schedule=WeightSchedule("tied"))
    with pytest.raises(ValueError, match="depth 1000000000000 exceeds the limit of 100000"):
        stage.set_depth(10**12)
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "200000")
    stage.set_depth(150_000)
    assert stage.depth == 150_000
    with pytest.raises(TypeError, match=r"compile_steps takes an nn\.Module, got int"):
        compile_steps(3)  # type: ignore[arg-type]


def test_compile_steps_and_invert_refuse_bad_options_when_given() -> None:
    """An unknown mode or backend surfaced as torch's error inside the first training step,
    and Invert kept anchor_tol=-1 or "x" until its first backward."""
    from odedsl.runtime import Invert

    stage = make_stage("euler", 4, schedule=WeightSchedule("tied"))
    for options, error, fragment in [
        ({"mode": "fastest"}, ValueError, "compile_steps: Unrecognized mode=fastest"),
        ({"backend": "nope"}, ValueError, "compile_steps: Invalid backend: 'nope'"),
        ({"bakend": "aot_eager"}, TypeError, "unexpected keyword argument 'bakend'"),
    ]:
        with pytest.raises(error, match=fragment):
            compile_steps(stage, **options)
        assert stage.step_compiler is None  # nothing set
    compile_steps(stage, backend="aot_eager")
    assert stage.step_compiler is not None
    for tol in (-1, 0, "x", True, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="anchor_tol must be a finite number above 0"):
            Invert(anchor_tol=tol)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="measure_anchors must be True or False"):
        Invert(measure_anchors="yes")  # type: ignore[arg-type]
    assert Invert(anchor_tol=1e-3).anchor_tol == 1e-3


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_dropout_replays_under_compile(mode: object) -> None:
    """Random residuals replay the same stream in forward and recomputation when compiled."""
    torch.manual_seed(0)
    sw = state_width("hamiltonian", 8)
    stage = make_stage(
        "hamiltonian", 4, residual=lambda w: MLP(w, dropout=0.3), stochastic=True, backward=mode
    )
    assert sw == 4
    net = nn.Sequential(nn.Linear(6, 8), stage, nn.Linear(8, 2)).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    store = run(net, x, mode="store")
    compiled, _ = compiled_run(net, x)
    torch.testing.assert_close(compiled.out, store.out, rtol=1e-12, atol=1e-12)
    assert max_param_error(compiled, store) < 1e-10


def test_fullgraph_is_refused_with_a_reason() -> None:
    torch._dynamo.reset()
    net = network("euler", 3, WeightSchedule("tied"), "invert")
    with pytest.raises(Exception, match="compile without fullgraph=True"):
        torch.compile(net, backend="aot_eager", fullgraph=True)(torch.randn(2, 6).double())


def test_compile_steps_survives_copies() -> None:
    net = compile_steps(network("euler", 3, WeightSchedule("tied"), "invert"), backend="eager")
    x = torch.randn(4, 6, dtype=torch.float64)
    net(x)
    assert net[1].step_compiler._fns
    for clone in (copy.deepcopy(net), copy.deepcopy(copy.deepcopy(net))):
        compiler = clone[1].step_compiler
        assert compiler is not None and compiler.options["backend"] == "eager"
        assert not compiler._fns  # compiled again on first use, for the copy's own modules
        torch.testing.assert_close(clone(x), net(x))
    compile_steps(net, enabled=False)
    assert net[1].step_compiler is None


def check_inductor_conv_stage(program: str, width: int, mode: object, device: str) -> None:
    """Plain ``torch.compile`` (inductor) of a convolutional stage on ``device`` equals eager,
    and its residuals really ran compiled."""
    from .programs import ConvBlock

    torch._dynamo.reset()
    torch.manual_seed(0)
    stage = make_stage(
        program,
        6 if device == "cpu" else 8,
        width=width,
        residual=ConvBlock,
        backward=mode,
        dtype=torch.float32,
    )
    net = nn.Sequential(nn.Conv2d(2, width, 1), stage, nn.Flatten(), nn.Linear(16 * width, 3))
    net = net.to(device)
    x = torch.randn(5, 2, 4, 4, device=device)
    eager = run(net, x)
    compiled = run(torch.compile(copy.deepcopy(net)), x, copy_module=False)
    torch.testing.assert_close(compiled.out, eager.out, rtol=1e-4, atol=1e-5)
    assert max_param_error(compiled, eager) < 1e-3
    assert compiled.module._orig_mod[1].__dict__["_auto_compiler"]._fns


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_inductor_conv_stage_equals_eager(mode: object) -> None:
    """The default path: plain ``torch.compile`` (inductor) of a convolutional stage."""
    check_inductor_conv_stage("midpoint", 4, mode, "cpu")


@pytest.mark.parametrize("mode", ["store", "invert"])
def test_autocast_is_respected_when_compiled(mode: str) -> None:
    """A residual graph compiled outside autocast is not reused inside it: under bfloat16
    autocast the compiled network equals the eager one bit for bit (``eager`` backend)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 3, backward=mode, dtype=torch.float32)
    net = compile_steps(nn.Sequential(nn.Linear(6, 8), stage, nn.Linear(8, 2)), backend="eager")
    eager = compile_steps(copy.deepcopy(net), enabled=False)
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(10, 6)
    torch.testing.assert_close(compiled(x), eager(x), rtol=0, atol=0)  # float32 graphs first
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = compiled(x), eager(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_torch_export_still_traces_the_forward(mode: object) -> None:
    """``torch.export`` (inference graphs) traces the stage's forward, not the compiled path."""
    net = network("hamiltonian", 3, WeightSchedule("untied"), mode).eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    program = torch.export.export(net, (x,))
    torch.testing.assert_close(program.module()(x), net(x), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run by benchmarks/gpu.sh)")
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_cuda_inductor_stage_equals_eager(mode: object) -> None:
    """The GPU path: inductor (Triton) residual graphs, every mode, against eager on the GPU."""
    check_inductor_conv_stage("hamiltonian", 8, mode, "cuda")


def test_set_depth_keeps_a_step_the_spec_fixed() -> None:
    stage = make_stage("euler", 4, schedule=WeightSchedule("tied"), step=0.1)
    stage.set_depth(8)
    assert stage.depth == 8 and stage.h == 0.1


TIED = """network net(depth: int = 4) {
    input vector[3]
    stage body = ode(depth) { integrator euler weights tied STEP residual { linear(3) tanh } }
}"""


@pytest.mark.parametrize("step", ["", "step 0.1"])
def test_set_depth_on_a_compiled_spec_follows_the_depth_unless_a_step_is_written(
    step: str,
) -> None:
    """A compiled stage always received the spec's step, as if written: after set_depth(8)
    a depth-4 stage kept h = 1/4 and integrated to t = 2 (red-team audit, 2026-12-02)."""
    import odedsl

    model = odedsl.compile(TIED.replace("STEP", step), dtype=torch.float64)
    model.body.set_depth(8)
    assert model.body.h == (0.1 if step else 1 / 8)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = x.clone()
    for _ in range(8):  # seed 000 eq. (1) with tied weights: x += h f(x, θ)
        y = y + model.body.h * model.body.f[0](y)
    torch.testing.assert_close(model(x), y, rtol=1e-13, atol=1e-13)
    deep = odedsl.compile(TIED.replace("STEP", step), depth=8, dtype=torch.float64)
    deep.load_state_dict(model.state_dict())
    torch.testing.assert_close(deep(x), model(x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_jit_trace_records_the_forward(mode: object) -> None:
    """``torch.jit.trace`` (which the TorchScript ONNX exporter runs) records every mode's
    forward: outputs and gradients equal the untraced module's. A mode that stores less than
    ``store`` warns that the trace does not keep it; under ``no_grad`` nothing warns."""
    torch.manual_seed(0)
    net = network("hamiltonian", 3, WeightSchedule("untied"), mode)
    x = torch.randn(4, 6, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(net, (x,), check_trace=False)
    traced_warnings = [w for w in caught if issubclass(w.category, TracedStageWarning)]
    if str(mode) == "store":
        assert traced_warnings == []
    else:
        assert len(traced_warnings) == 1
        assert "instead of '" in str(traced_warnings[0].message)
    torch.testing.assert_close(traced(x), net(x), rtol=1e-12, atol=1e-12)
    traced(x).square().sum().backward()
    want = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()
    net(x).square().sum().backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(want[k], p.grad, rtol=1e-10, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TracedStageWarning)
        with torch.no_grad():
            torch.jit.trace(net, (x,), check_trace=False)


@pytest.mark.parametrize("mode", [("checkpoint", 3), "invert"], ids=str)
def test_jit_trace_warning_names_the_tracer_the_mode_and_the_depth(mode: object) -> None:
    torch.manual_seed(0)
    net = network("hamiltonian", 3, WeightSchedule("untied"), mode)
    x = torch.randn(4, 6, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(net, (x,), check_trace=False)
    (w,) = [w for w in caught if issubclass(w.category, TracedStageWarning)]
    text = str(w.message)
    assert text.startswith("stage 'body': torch.jit.trace records its forward operations only")
    assert f"stores all 3 layers instead of '{net[1].backward_mode}'" in text
    assert "trace under torch.no_grad()" in text and "torch.func" not in text
    assert w.message.stage == "body"


def test_store_never_warns_under_jit_trace_even_through_the_eager_loop() -> None:
    """store skips the eager loop while nothing needs it (so the trace test's "store: no
    warning" never reached the check); with the forward check on it runs there too, and a
    trace still changes nothing about store's backward."""
    torch.manual_seed(0)
    net = network("hamiltonian", 3, WeightSchedule("untied"), "store", check_forward=True)
    x = torch.randn(4, 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TracedStageWarning)
        traced = torch.jit.trace(net, (x,), check_trace=False)
    torch.testing.assert_close(traced(x), net(x), rtol=1e-12, atol=1e-12)


def test_set_depth_refuses_more_shared_groups_than_layers() -> None:
    """The spec refuses shared(k) with k > depth (E205: groups no layer reads); set_depth(n)
    accepted it, and groups 1 and 3 of shared(4) at depth 2 were silently never used."""
    stage = make_stage("euler", 4, schedule=WeightSchedule("shared", 4))
    with pytest.raises(ValueError, match=r"shared\(4\) has more groups than the stage's 2 layers"):
        stage.set_depth(2)
    assert stage.depth == 4 and stage.h == pytest.approx(1 / 4)  # left as it was
    stage.set_depth(4)
    stage.set_depth(9)
    assert stage.depth == 9
    with pytest.raises(ValueError, match=r"shared\(4\) has more groups than the stage's 3 layers"):
        make_stage("euler", 3, schedule=WeightSchedule("shared", 4))
