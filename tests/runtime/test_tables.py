"""Cached stage tables (parameter list, slot indices) and the cheap backward NaN check."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from odedsl.runtime import NumericalFault

from .programs import MLP, PROGRAMS
from .test_guards import Poisonable
from .util import grad_error, make_stage, run


def _params_of(stage) -> list[nn.Parameter]:
    return list(stage.parameters())


def test_tables_are_cached_while_nothing_changes():
    stage = make_stage("hamiltonian", 6, backward="invert")
    tables = stage.tables()
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    stage(x).sum().backward()
    assert stage.tables() is tables
    assert stage.param_list() == _params_of(stage)


@pytest.mark.parametrize(
    "change",
    [
        "parameter",
        "module",
        "assign_state_dict",
        "to_float32",
        "overwrite_on_conversion",
        "delete_bias",
    ],
)
def test_tables_follow_changes_to_the_module_tree(change):
    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 6, backward="invert")
    before = stage.tables()
    dtype = torch.float64
    if change == "parameter":
        w = stage.f[2].lin2.weight
        stage.f[2].lin2.weight = nn.Parameter(w.detach() * 2)
    elif change == "module":
        stage.g[3] = MLP(4).to(torch.float64)
    elif change == "assign_state_dict":
        sd = {k: v.clone() * 1.5 for k, v in stage.state_dict().items()}
        stage.load_state_dict(sd, assign=True)
    elif change == "to_float32":
        stage.to(torch.float32)
        dtype = torch.float32
    elif change == "overwrite_on_conversion":
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        try:
            stage.to(torch.float32)
        finally:
            torch.__future__.set_overwrite_module_params_on_conversion(False)
        dtype = torch.float32
    else:
        stage.f[1].lin2.bias = None
    assert stage.param_list() == _params_of(stage)
    if change != "to_float32":  # in-place conversion keeps the parameters themselves
        assert stage.tables() is not before
    x = torch.randn(4, 8, dtype=dtype)
    store, inv = run(stage, x, "store"), run(stage, x, "invert")
    assert grad_error(inv, store) < (1e-10 if dtype == torch.float64 else 1e-4)
    assert all(g is not None for k, g in inv.grads.items() if "lin2" in k)


def test_tables_in_place_load_state_dict_and_deepcopy():
    torch.manual_seed(0)
    stage = make_stage("momentum", 5, backward="invert")
    tables = stage.tables()
    other = make_stage("momentum", 5)
    stage.load_state_dict(other.state_dict())  # copies in place: same parameter objects
    assert stage.tables() is tables
    clone = copy.deepcopy(stage)
    assert clone.param_list() == _params_of(clone)
    assert not set(map(id, clone.param_list())) & set(map(id, stage.param_list()))


class Masking(Poisonable):
    """Maps non-finite inputs to 0 before the MLP: the residual hides a NaN state."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))


@pytest.mark.parametrize("program", ["hamiltonian", "momentum", "heun", "midpoint"])
@pytest.mark.parametrize("residual", [Poisonable, Masking], ids=["plain", "masking"])
def test_nan_in_reconstruction_is_always_found(program, residual):
    torch.manual_seed(0)
    stage = make_stage(program, 8, backward="invert", residual=residual)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    out = stage(x)
    stage.f[6].poison = True
    with pytest.raises(NumericalFault, match=r"'body'.*layer 6") as info:
        out.sum().backward()
    assert info.value.layer == 6


def test_nan_hidden_by_an_anchor_is_found():
    """Re-anchoring replaces the reconstructed state: the NaN above the anchor still counts."""
    torch.manual_seed(0)
    stage = make_stage("momentum", 64, backward="invert", residual=Poisonable)
    stage.program = PROGRAMS["momentum"](0.5)
    assert stage.anchor_plan(torch.float64).every == 18
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    out = stage(x)
    stage.f[40].poison = True
    with pytest.raises(NumericalFault, match=r"layer 40"):
        out.sum().backward()
    stage.f[40].poison = False
    stage(x).sum().backward()  # finite again: no error


def test_the_locator_restarts_from_every_anchor():
    """Below many anchors the slow NaN locator must restart from them as the backward does:
    without, momentum γ = 1/2 at depth 1400 amplified rounding to overflow and the error named
    layer 321 for a NaN at layer 5 (mutation audit, 2026-12-02)."""
    torch.manual_seed(0)
    stage = make_stage("momentum", 1400, width=4, backward="invert", residual=Poisonable)
    stage.program = PROGRAMS["momentum"](0.5)
    assert stage.anchor_plan(torch.float64).count > 40
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    out = stage(x)
    stage.f[5].poison = True
    with pytest.raises(NumericalFault, match=r"layer 5\b"):
        out.sum().backward()


REPARAMETRISED = """network net(depth: int = 6) {
    input vector[4]
    stage body = ode(depth) {
        integrator INT weights untied backward MODE residual { linear(4) tanh linear(4) }
    }
}"""


@pytest.mark.parametrize("integrator", ["midpoint", "reversible_heun"])
@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm", "parametrizations", "prune"])
@pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
def test_weights_reparametrised_by_hooks_train_in_invert_as_in_store(
    integrator: str, wrap: str
) -> None:
    """``nn.utils.weight_norm`` and ``spectral_norm`` keep ``weight`` as a plain attribute
    that a forward pre-hook rebuilds from registered parameters; invert refused it as an
    unregistered weight (FSDP1's views), although its re-run rebuilds it (audit, 2026-12-02).
    ``nn.utils.prune`` rebuilds ``weight`` from ``weight_orig`` and ``weight_mask`` the same
    way, but its hook names the attribute ``_tensor_name``, not ``name``: it was still refused
    (review 2026-12-03; store's gradients to 1e-17)."""
    import torch.nn.utils.prune as prune

    import odedsl

    apply = {
        "weight_norm": nn.utils.weight_norm,
        "spectral_norm": nn.utils.spectral_norm,
        "parametrizations": nn.utils.parametrizations.weight_norm,
        "prune": lambda module: prune.l1_unstructured(module, "weight", amount=0.5),
    }[wrap]
    x = torch.randn(3, 4, dtype=torch.float64)
    grads = {}
    for mode in ("store", "invert"):
        torch.manual_seed(0)
        spec = REPARAMETRISED.replace("INT", integrator).replace("MODE", mode)
        model = odedsl.compile(spec, dtype=torch.float64)
        for module in list(model.modules()):
            if isinstance(module, nn.Linear):
                apply(module)
        model(x).square().sum().backward()
        grads[mode] = {n: p.grad for n, p in model.named_parameters()}
    assert grads["store"].keys() == grads["invert"].keys()
    assert any("weight_" in n or "original" in n for n in grads["store"])
    for name, g in grads["store"].items():
        torch.testing.assert_close(grads["invert"][name], g, rtol=1e-12, atol=1e-12)
