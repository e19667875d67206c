"""What a PyTorch user does between a forward and its backward, in every backward mode, against
``store`` (plain autograd) in float64:

* ``model.eval()`` before ``backward()``: autograd differentiates the train-mode forward it
  recorded; ``invert`` re-ran residuals in eval mode (gradients 190 % off, silently) and
  ``checkpoint`` raised torch's CheckpointError;
* ``torch.func.functional_call`` with other tensors: the backward re-ran the residuals with the
  module's own parameters (invert: no gradient for the swapped-in tensors; checkpoint: 3-15 %
  off, silently, as plain ``torch.utils.checkpoint`` is);
* a parameter edited in place (an optimizer step) before ``backward()``: store refuses it
  through autograd's version counters; checkpoint and approximate invert returned the
  gradient of the new weights silently;
* an in-place op on the stage's output: invert's saved output is gone, and says so;
* ``copy.deepcopy`` of a compiled model keeps ``input_shape``, ``network_name`` and
  ``weights_fingerprint``;
* ``torch.func.grad`` and ``vmap`` gave torch's errors in checkpoint and invert.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

import odedsl
from odedsl.runtime import OdeStage
from odedsl.runtime.errors import ParametersModifiedError, TracedStageWarning

SPECS = Path(__file__).resolve().parents[2] / "specs"
SMALL = {
    "momentum": {"width": 4, "size": 8, "stride": 1},
    "revnet": {"width": 4, "size": 6},
    "resnet": {"width": 4, "size": 8, "stride": 1},
}
MODES = ("checkpoint(2)", "invert")


def build(name: str, backward: str, seed: int) -> nn.Module:
    """A small float64 network with weights drawn away from the spec's zero initialisation
    (zero residuals would make every inverse trivially exact)."""
    torch.manual_seed(0)
    model = odedsl.compile(SPECS / f"{name}.ode", depth=3, backward=backward, **SMALL[name])
    model = model.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            scale = 0.3 if p.dim() > 1 else 0.5
            shift = 1.0 if "bn" in n and n.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale + shift)
    return model


def pair(name: str, backward: str) -> tuple[nn.Module, nn.Module]:
    seed = int(torch.randint(0, 2**31, ()).item())  # fresh weights every run
    ref, test = build(name, "store", seed), build(name, backward, seed)
    test.load_state_dict(ref.state_dict())
    return ref, test


def batch(model: nn.Module) -> torch.Tensor:
    return torch.randn(3, *model.input_shape, dtype=torch.float64)


def close(got: dict[str, torch.Tensor | None], want: dict[str, torch.Tensor | None]) -> float:
    """The worst per-tensor gradient difference relative to the norm of all gradients (a
    bias before a BatchNorm has a gradient of rounding size only)."""
    scale = sum(float(g.norm()) ** 2 for g in want.values() if g is not None) ** 0.5
    assert scale > 0
    worst = 0.0
    for n, g in want.items():
        if g is None:
            continue
        assert got[n] is not None, n
        worst = max(worst, float((got[n] - g).norm()) / scale)
    return worst


def grads_of(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: p.grad for n, p in model.named_parameters()}


def assert_same_grads(ref: nn.Module, test: nn.Module, tol: float) -> None:
    assert close(grads_of(test), grads_of(ref)) < tol


# ------------------------------------------------------------------ eval() before backward
@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("name", ["momentum", "revnet"])
@pytest.mark.parametrize(
    "forward_training", [True, False], ids=["train-then-eval", "eval-then-train"]
)
def test_a_mode_switch_between_forward_and_backward_keeps_the_forward_modes_gradient(
    name: str, backward: str, forward_training: bool
) -> None:
    """model.eval() (or model.train()) between forward and backward: the backward re-runs
    the layers in the mode the forward ran (train: batch statistics, updated once; eval:
    BatchNorm's running statistics, none updated), and puts the flags back after."""
    ref, test = pair(name, backward)
    x = batch(ref)
    for model in (ref, test):
        y = model.train(forward_training)(x)
        model.train(not forward_training)
        y.square().sum().backward()
    assert_same_grads(ref, test, 1e-9)
    for a, b in zip(ref.buffers(), test.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert all(m.training is not forward_training for m in test.modules())  # flags put back


def test_eval_before_backward_changes_nothing_in_approximate_invert() -> None:
    """Euler's invert is an approximation; with the switch it must equal itself without."""
    _, switched = pair("resnet", "invert")
    plain = copy.deepcopy(switched)
    x = batch(plain)
    plain(x).square().sum().backward()
    y = switched(x)
    switched.eval()
    y.square().sum().backward()
    assert_same_grads(plain, switched, 1e-13)


# ------------------------------------------------------------------ functional_call
@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("name", ["revnet", "momentum"])
def test_functional_call_differentiates_the_tensors_passed_in(name: str, backward: str) -> None:
    ref, test = pair(name, backward)
    x = batch(ref)
    grads = {}
    for tag, model in (("ref", ref), ("test", test)):
        swapped = {n: (p.detach() * 1.1).requires_grad_() for n, p in model.named_parameters()}
        y = functional_call(model, swapped, (x,))
        y.square().sum().backward()
        grads[tag] = swapped
        assert all(p.grad is None for p in model.parameters())  # its own weights: untouched
    got = {n: p.grad for n, p in grads["test"].items()}
    assert close(got, {n: p.grad for n, p in grads["ref"].items()}) < 1e-9
    own = dict(test.named_parameters())
    assert all(own[n] is not t for n, t in grads["test"].items())  # the swap was undone
    y = test(x)  # and the module runs on its own weights again
    torch.testing.assert_close(y, ref(x), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ in-place edits
@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("name", ["momentum", "resnet"])
def test_a_weight_edited_before_backward_is_refused(name: str, backward: str) -> None:
    _, test = pair(name, backward)
    y = test(batch(test))
    body = test.get_submodule("body")
    assert isinstance(body, OdeStage)
    weight = body.residual_modules("f")[1].conv1.weight
    with torch.no_grad():
        weight.mul_(1.5)  # what optimizer.step() does
    with pytest.raises(
        ParametersModifiedError, match=r"stage 'body': f\.1\.conv1\.weight was"
    ) as err:
        y.sum().backward()
    assert err.value.parameter == "f.1.conv1.weight" and "hint: call backward()" in str(err.value)


def test_store_refuses_the_same_edit() -> None:
    """The behaviour the other modes now match (autograd's own version check)."""
    _, model = pair("momentum", "store")
    y = model(batch(model))
    with torch.no_grad():
        model.get_submodule("body").residual_modules("f")[1].conv1.weight.mul_(1.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("backward", ["store", "checkpoint(2)", "invert"])
def test_an_in_place_op_on_the_stage_output(backward: str) -> None:
    """store and checkpoint do not need the output; invert rebuilds from it, and says so."""
    _, model = pair("resnet", backward)
    x = batch(model)
    stem, body = model.get_submodule("stem"), model.get_submodule("body")
    y = torch.relu_(body(stem(x)))
    if backward != "invert":
        y.sum().backward()
        return
    with pytest.raises(RuntimeError, match="stage 'body': its output was modified in place"):
        y.sum().backward()


# ------------------------------------------------------------------ copies
def test_deepcopy_keeps_the_compiled_attributes() -> None:
    model = odedsl.compile(SPECS / "momentum.ode", depth=2, **SMALL["momentum"])
    for copied in (copy.deepcopy(model), copy.deepcopy(copy.deepcopy(model))):
        assert copied.input_shape == model.input_shape == (3, 8, 8)
        assert copied.network_name == model.network_name == "momentum"
        assert copied.weights_fingerprint == model.weights_fingerprint  # what files are checked by


# ------------------------------------------------------------------ hooks
@pytest.mark.parametrize("backward", ["store", "checkpoint(2)", "invert"])
def test_hooks_as_the_readme_states(backward: str) -> None:
    """A residual's forward hook runs whenever the residual does (again in invert's backward,
    and in checkpoint's unless torch's recomputation stopped early inside that residual); a
    full backward hook on the stage fires once per backward with store's values."""
    ref, model = pair("momentum", backward)
    x = batch(model)
    seen: dict[str, list[torch.Tensor]] = {}
    calls = []
    for tag, net in (("ref", ref), ("test", model)):
        stage = net.get_submodule("body")
        residual = stage.residual_modules("f")[1]
        hook = residual.register_forward_hook(lambda *_, tag=tag: calls.append(tag))

        def keep(_m: nn.Module, _gin: object, gout: tuple[torch.Tensor, ...], tag=tag) -> None:
            seen.setdefault(tag, []).append(gout[0].detach().clone())

        stage.register_full_backward_hook(keep)
        for _ in range(2):  # the second call: invert's anchors are measured by then
            before = len(calls)
            net(x).square().sum().backward()
            runs = len(calls) - before
        hook.remove()
        if tag == "ref" or backward != "checkpoint(2)":
            assert runs == (1 if tag == "ref" or backward == "store" else 2), (tag, runs)
        else:  # torch's recomputation stops once it has every saved tensor: maybe mid-module
            assert runs in (1, 2), runs
    assert len(seen["test"]) == len(seen["ref"]) == 2
    for got, want in zip(seen["test"], seen["ref"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_forward_hook_cannot_hook_tensors_in_invert() -> None:
    """invert's forward runs under no_grad (nothing to hook: say so, as the README does)."""
    _, model = pair("momentum", "invert")
    residual = model.get_submodule("body").residual_modules("f")[1]
    residual.register_forward_hook(lambda _m, _i, out: out.register_hook(lambda g: g))
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        model(batch(model)).sum().backward()


# ------------------------------------------------------------------ torch.func
@pytest.mark.parametrize("backward", ["store", "checkpoint(2)", "invert"])
def test_torch_func_grad_and_vmap_run_the_layers_as_plain_operations(backward: str) -> None:
    """Neither invert's Function nor checkpoint's saved-tensor hooks have a functorch rule
    (torch's errors: "must override the setup_context staticmethod", "don't yet support saved
    tensor hooks"); under a transform the stage runs its layers as plain operations, warns
    that this backward stores them, and gives store's numbers."""
    ref, model = pair("momentum", backward)
    x = batch(model)
    results = []
    for net in (ref, model):
        net.eval()  # BatchNorm's running statistics are in-place updates torch.func refuses
        params = {k: v.detach() for k, v in net.named_parameters()}

        def loss(p: dict[str, torch.Tensor], net: nn.Module = net) -> torch.Tensor:
            return functional_call(net, p, (x,)).square().sum()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            g = torch.func.grad(loss)(params)
            out = torch.func.vmap(lambda xi, net=net: net(xi.unsqueeze(0)))(x)
        results.append((g, out))
        traced = [w for w in caught if issubclass(w.category, TracedStageWarning)]
        if net is model and backward != "store":
            assert traced and "torch.func transforms" in str(traced[0].message)
        else:
            assert not traced
    (g_ref, out_ref), (g, out) = results
    assert close(dict(g), dict(g_ref)) < 1e-12
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backward", ["checkpoint(1)", "invert"])
def test_the_forward_is_compared_once_per_backward(
    backward: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tree walk that decides whether anything must be restored is O(modules); made per
    checkpoint segment it turned a backward quadratic in depth (0.7 s → 5-10 s at N = 1024,
    found in review)."""
    from odedsl.runtime.tables import StageTables

    stage = odedsl.compile(SPECS / "resnet.ode", depth=16, backward=backward, **SMALL["resnet"])
    y = stage(torch.randn(2, *stage.input_shape)).sum()
    calls = []
    original = StageTables.valid
    monkeypatch.setattr(StageTables, "valid", lambda self: calls.append(1) or original(self))
    y.backward()
    assert 1 <= len(calls) <= 2, len(calls)
