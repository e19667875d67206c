"""Residuals whose output reads a buffer they update (spectral normalisation) replay the
forward's buffers in every recomputation.

``torch.nn.utils.parametrizations.spectral_norm`` runs a power iteration on its ``_u``/``_v``
buffers each time a weight is read in train mode, and divides the weight by the σ they give.
A recomputation read them after the forward's update and updated them again, so it ran other
weights than the forward: checkpoint's and exact invert's gradients were 0.7–2.8 % off
``store``'s, silently (found on 2026-12-02). Reference: ``store`` (plain autograd) in float64,
fresh weights per seed; the buffers must also end as ``store``'s (updated once per read).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import odedsl
from odedsl.runtime import OdeStage

SPEC = """\
network sn(depth: int = 6, state: int = 4) {{
    input image[4, 5, 5]
    stem {{ conv2d(4, kernel=3, padding=1) }}
    stage s = ode(depth) {{
        integrator {integrator}
        weights {weights}
        residual {{
            conv2d(4, kernel=3, padding=1) tanh {dropout} conv2d(state, kernel=3, padding=1)
        }}
    }}
    head {{ flatten linear(3) }}
}}
"""
EXACT = {"hamiltonian": 2, "additive_coupling": 2, "momentum": 4, "midpoint": 4}


def build(
    integrator: str,
    backward: str,
    weights: str,
    seed: int,
    dropout: bool = False,
    depth: int = 6,
) -> nn.Module:
    torch.manual_seed(seed)
    source = SPEC.format(
        integrator=integrator, weights=weights, dropout="dropout(0.2)" if dropout else ""
    )
    model = odedsl.compile(
        source,
        dtype=torch.float64,
        backward=backward,
        state=EXACT.get(integrator, 4),
        depth=depth,
    )
    for stage in model.modules():
        if isinstance(stage, OdeStage):
            for conv in [m for m in stage.modules() if isinstance(m, nn.Conv2d)]:
                parametrizations.spectral_norm(conv)
    return model


def step(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Two forward/backward passes (the buffers move between them); the gradients summed."""
    g = torch.Generator().manual_seed(100 + seed)
    for _ in range(2):
        x = torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64)
        torch.manual_seed(7)  # the same dropout draws in every mode
        model(x).square().sum().backward()
    return {k: p.grad for k, p in model.named_parameters()}


def assert_as_store(integrator: str, backward: str, weights: str, dropout: bool = False):
    for seed in (0, 1):
        ref = build(integrator, "store", weights, seed, dropout)
        test = build(integrator, backward, weights, seed, dropout)
        want, got = step(ref, seed), step(test, seed)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-12, msg=key)
        buffers = dict(ref.named_buffers())
        assert any("_u" in k for k in buffers)
        for key, value in test.named_buffers():
            assert torch.equal(value, buffers[key]), key


@pytest.mark.parametrize("backward", ["checkpoint(1)", "checkpoint(4)", "invert"])
@pytest.mark.parametrize("integrator", sorted(EXACT))
def test_spectral_norm_gradients_equal_store(integrator: str, backward: str) -> None:
    assert_as_store(integrator, backward, "untied")


@pytest.mark.parametrize("backward", ["checkpoint(2)", "invert"])
@pytest.mark.parametrize("weights", ["tied", "interpolated(3)"])
def test_spectral_norm_with_shared_slots(weights: str, backward: str) -> None:
    """A tied slot is read by every layer, each read one power iteration further."""
    assert_as_store("hamiltonian", backward, weights)


@pytest.mark.parametrize("backward", ["checkpoint(3)", "invert"])
def test_spectral_norm_with_dropout(backward: str) -> None:
    """Replayed buffers and replayed random streams together."""
    assert_as_store("additive_coupling", backward, "untied", dropout=True)


@pytest.mark.parametrize("backward", ["checkpoint(1)", "checkpoint(3)"])
def test_spectral_norm_read_twice_at_one_offset(backward: str) -> None:
    """RK4 reads f at t + h/2 twice in one update (k2, k3), each read one power iteration
    further: the two calls are kept apart by their occurrence, so a recomputation replays
    each read's own buffers (one key for both replayed the second read's at the first)."""
    assert_as_store("rk4", backward, "untied")


def test_euler_invert_error_falls_with_depth() -> None:
    """An approximate inverse (seed 000's reverse-time Euler) reads, at calls the forward never
    made, the buffers as its last replay left them: its error still falls with depth."""
    errors = []
    for depth in (4, 32):
        want = step(build("euler", "store", "untied", 0, depth=depth), 0)
        got = step(build("euler", "invert", "untied", 0, depth=depth), 0)
        errors.append(max(float((got[k] - v).norm() / v.norm()) for k, v in want.items()))
    assert errors[1] < errors[0] / 4, errors


def test_batch_norm_is_not_replayed() -> None:
    """BatchNorm only writes its statistics in train mode: no per-call copies (invert's memory
    stays one state per stage), and spectral norm's slots are the only ones kept."""
    torch.manual_seed(0)
    bn = odedsl.compile(
        SPEC.format(integrator="hamiltonian", weights="untied", dropout="batchnorm2d").replace(
            "conv2d(state", "conv2d(2"
        ),
        dtype=torch.float64,
        backward="invert",
    )
    stage = bn.get_submodule("s")
    assert stage.tables().buffered and not stage.tables().replayed
    sn = build("hamiltonian", "invert", "untied", 0)
    tables = sn.get_submodule("s").tables()
    assert tables.replayed == tables.buffered and len(tables.replayed) == 2 * 6


def test_buffers_a_call_only_reads_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """``orthogonal`` keeps a ``base`` buffer it reads and never writes in forward: its copies
    are dropped after each call (a weight-sized copy per layer otherwise); spectral norm's,
    which every read updates, are kept, one per read."""
    import odedsl.runtime.stage as stage_module

    contexts: list[object] = []
    real = stage_module.RunContext

    def recording(*args: object) -> object:
        ctx = real(*args)
        contexts.append(ctx)
        return ctx

    monkeypatch.setattr(stage_module, "RunContext", recording)
    kept = {}
    for how, wrap in (("orthogonal", parametrizations.orthogonal), ("spectral", None)):
        torch.manual_seed(0)
        model = build("hamiltonian", "invert", "untied", 0) if wrap is None else None
        if wrap is not None:
            torch.manual_seed(0)
            model = odedsl.compile(
                SPEC.format(integrator="hamiltonian", weights="untied", dropout=""),
                dtype=torch.float64,
                backward="invert",
                state=2,
            )
            for conv in [m for m in model.get_submodule("s").modules() if isinstance(m, nn.Conv2d)]:
                wrap(conv)
        contexts.clear()
        x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
        model(x).square().sum().backward()
        (ctx,) = [c for c in contexts if c.buffers is not None]
        kept[how] = len(ctx.buffers)
    assert kept == {"orthogonal": 0, "spectral": 2 * 6}, kept


def test_spectral_norm_under_compiled_residuals() -> None:
    """A compiled residual writes its buffers back after the graph (functionalised): the
    replay sees the write and restores them the same way."""
    from odedsl.runtime import compile_steps

    ref = build("hamiltonian", "store", "untied", 0)
    test = compile_steps(build("hamiltonian", "invert", "untied", 0), backend="aot_eager")
    want, got = step(ref, 0), step(test, 0)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-12, msg=key)
    buffers = dict(ref.named_buffers())
    for key, value in test.named_buffers():
        assert torch.equal(value, buffers[key]), key
