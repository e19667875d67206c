"""Sharded training: FSDP2 (``fully_shard``) and FSDP1 (``FullyShardedDataParallel``) over
``torchrun --nproc_per_node=2`` (gloo, CPU), every backward mode, against one process on the
whole batch (``fsdp_worker.py`` says what each configuration shards).

Sharding the model or each stage trains exactly as one process does (float64, 1e-10 after two
SGD steps), in every mode. Two configurations cannot work in the modes that re-run residuals
inside the stage's backward, and are refused before a step, naming the module and the way out
(they were silent or anonymous before 2026-12-02):

* a residual sharded on its own, in ``checkpoint`` (DTensor's mixed-tensor error) and
  ``invert`` (the residuals' gradients came back ``None``, so the optimizer skipped them);
* FSDP1 with ``use_orig_params=False``, its default, in ``invert``: it holds the weights as
  plain tensor views, which invert did not differentiate (the stage's 22 weights never moved).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from odedsl.runtime import OdeStage, ShardedResidualError

from .fsdp_worker import CONFIGS, LR, MODES, STEPS, batch, build, loss_fn
from .torchrun import torchrun

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
#: configurations refused, by mode: (FSDP version, what is sharded, use_orig_params)
REFUSED = {
    "store": set(),
    "checkpoint(1)": {("fsdp2", "residuals", None), ("fsdp1", "residuals", True)},
    "invert": {
        ("fsdp2", "residuals", None),
        ("fsdp1", "residuals", True),
        ("fsdp1", "root", False),
    },
}


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``torchrun`` of every configuration (process start-up dominates the cost)."""
    return torchrun("fsdp_worker.py", tmp_path_factory.mktemp("fsdp") / "results.pt")


def reference(backward: str) -> dict[str, torch.Tensor]:
    """One process, the whole batch, no sharding."""
    model = build(backward)
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return {k: p.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_sharded_training_equals_one_process_or_is_refused(
    fsdp_results: dict[str, Any], backward: str, config: tuple[str, str, bool | None]
) -> None:
    assert fsdp_results["world"] == 2
    got = fsdp_results[f"{backward} {' '.join(map(str, config))}"]
    if config in REFUSED[backward]:
        assert isinstance(got, str) and got.startswith("ShardedResidualError: stage 's1': "), got
        assert "\n  hint: " in got
        if config[2] is False:
            assert "'f.0.conv1.weight' takes gradients but is not a registered" in got
            assert "use_orig_params=True" in got and "checkpoint(k)" in got
        else:
            assert "its module 'f.0' is sharded by FSDP on its own" in got
            assert "fully_shard to the stage" in got
        return
    assert isinstance(got, dict), got
    want = reference(backward)
    start = dict(build(backward).named_parameters())
    assert got.keys() == want.keys()
    moved = [k for k in want if not torch.equal(want[k], start[k])]
    assert len(moved) == len(want), "every weight of the reference trains"
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-10, msg=key)


# The detection itself, in one process: FSDP is recognised by class name (``FSDPModule``,
# which ``fully_shard`` mixes into a module's class; ``FullyShardedDataParallel``), so a
# class of that name stands in for it without a process group.


class FSDPModule(nn.Module):
    """What ``fully_shard`` makes a module's class inherit from (found by name)."""


def _fake_sharded_stage(backward: str, where: str) -> OdeStage:
    """A Hamiltonian stage with its residual ``f.1`` (``where="residual"``) or the stage
    itself (``"stage"``) made an instance of a subclass of :class:`FSDPModule`."""
    from tests.runtime.util import make_stage

    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 3, backward=backward)
    module = stage if where == "stage" else stage.get_submodule("f.1")
    module.__class__ = type("FSDP" + type(module).__name__, (FSDPModule, type(module)), {})
    return stage


@pytest.mark.parametrize("backward", ["checkpoint(1)", "invert"])
def test_a_residual_sharded_on_its_own_is_refused_before_the_forward(backward: str) -> None:
    """Named (``f.1``), in the modes that re-run residuals inside the stage's backward."""
    stage = _fake_sharded_stage(backward, "residual")
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ShardedResidualError) as err:
        stage(x)
    assert err.value.stage == "body" and err.value.module == "f.1"


def test_a_sharded_residual_is_not_refused_where_nothing_is_re_run() -> None:
    """``store`` keeps autograd's graph, and a forward without gradients re-runs nothing: both
    run, and equal the unsharded stage."""
    from tests.runtime.util import make_stage

    x = torch.randn(4, 8, dtype=torch.float64)
    torch.manual_seed(0)
    want = make_stage("hamiltonian", 3)(x)
    store = _fake_sharded_stage("store", "residual")
    torch.testing.assert_close(store(x), want, rtol=0, atol=0)
    store(x.clone().requires_grad_()).sum().backward()
    for backward in ("checkpoint(1)", "invert"):
        with torch.no_grad():
            torch.testing.assert_close(_fake_sharded_stage(backward, "residual")(x), want)


@pytest.mark.parametrize("backward", ["checkpoint(1)", "invert"])
def test_a_sharded_stage_itself_is_not_refused(backward: str) -> None:
    """Sharding the stage gathers its weights for its whole forward and backward."""
    from tests.runtime.util import grad_error, run

    stage = _fake_sharded_stage(backward, "stage")
    assert isinstance(stage, FSDPModule)
    x = torch.randn(4, 8, dtype=torch.float64)
    got, want = run(stage, x, None), run(stage, x, "store")
    assert grad_error(got, want) < 1e-10


def _with_plain_tensor(backward: str, requires_grad: bool) -> OdeStage:
    """FSDP1 with ``use_orig_params=False`` holds a weight as a plain attribute, not in
    ``_parameters``: ``f.0.scale`` here, read by the residual."""
    from tests.runtime.util import make_stage

    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 3, backward=backward)
    module = stage.get_submodule("f.0")
    scale = torch.ones((), dtype=torch.float64, requires_grad=requires_grad)
    module.__dict__["scale"] = scale
    real = module.forward
    module.forward = lambda x: real(x) * module.__dict__["scale"]  # type: ignore[method-assign]
    return stage


def test_an_unregistered_weight_is_refused_in_invert_only() -> None:
    """Invert differentiates registered parameters only: ``f.0.scale`` would get no gradient.
    Checkpoint re-runs under autograd, which reaches it; a plain tensor taking no gradient
    (a constant) is no weight."""
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ShardedResidualError) as err:
        _with_plain_tensor("invert", True)(x)
    assert err.value.module == "f.0.scale" and "use_orig_params=True" in str(err.value)
    stage = _with_plain_tensor("checkpoint(1)", True)
    stage(x).sum().backward()
    assert stage.get_submodule("f.0").__dict__["scale"].grad is not None
    _with_plain_tensor("invert", False)(x).sum().backward()
