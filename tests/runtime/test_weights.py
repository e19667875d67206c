"""Weight schedules: lookup tables by hand, slot counts, state-dict conversion."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odedsl.runtime import WeightSchedule, expand_state_dict
from odedsl.runtime.calls import LayerCall, RunContext

from .programs import MLP
from .util import grad_error, make_stage, run

EULER, HEUN = (0.0,), (0.0, 1.0)


def table(s: WeightSchedule, depth: int, c: float, offsets: tuple[float, ...]) -> list:
    return [s.lookup(n, c, depth, offsets) for n in range(depth)]


def test_tied():
    s = WeightSchedule("tied")
    assert s.slots(7, HEUN) == 1
    assert table(s, 3, 0.5, HEUN) == [((0, 1.0),)] * 3


def test_untied_layerwise_without_lookahead():
    s = WeightSchedule("untied")
    assert s.slots(4, EULER) == 4
    # every offset in [0, 1] uses the layer's own slot: reverse Euler at c=1 reads θ_n (eq. 6)
    for c in (0.0, 0.5, 1.0):
        assert table(s, 4, c, EULER) == [((n, 1.0),) for n in range(4)]


def test_untied_nodes_with_lookahead():
    s = WeightSchedule("untied")
    assert s.slots(4, HEUN) == 5
    assert table(s, 4, 0.0, HEUN) == [((n, 1.0),) for n in range(4)]
    assert table(s, 4, 1.0, HEUN) == [((n + 1, 1.0),) for n in range(4)]  # θ_{n+1} (eq. 8)
    assert s.lookup(2, 0.5, 4, HEUN) == ((2, 0.5), (3, 0.5))
    assert s.lookup(0, 0.25, 4, HEUN) == ((0, 0.75), (1, 0.25))


def test_shared():
    s = WeightSchedule("shared", 2)
    assert s.slots(6, EULER) == 2
    assert [b[0][0] for b in table(s, 6, 0.0, EULER)] == [0, 0, 0, 1, 1, 1]
    assert [b[0][0] for b in table(s, 6, 1.0, EULER)] == [0, 0, 0, 1, 1, 1]  # layer-wise
    # reading ahead, θ(s) at s = (n + c) / N: layer 2's corrector lands in group 1; s=1 -> k-1
    assert [b[0][0] for b in table(s, 6, 1.0, HEUN)] == [0, 0, 1, 1, 1, 1]
    s3 = WeightSchedule("shared", 3)
    assert [b[0][0] for b in table(s3, 7, 0.0, EULER)] == [0, 0, 0, 1, 1, 2, 2]


def test_interpolated():
    s = WeightSchedule("interpolated", 3)  # control points at s = 0, 0.5, 1
    assert s.slots(4, EULER) == s.slots(100, HEUN) == 3
    assert table(s, 4, 0.0, EULER) == [
        ((0, 1.0),),
        ((0, 0.5), (1, 0.5)),
        ((1, 1.0),),
        ((1, 0.5), (2, 0.5)),
    ]
    assert s.lookup(3, 1.0, 4, EULER) == ((2, 1.0),)
    assert s.lookup(0, 0.5, 4, EULER) == ((0, 0.75), (1, 0.25))
    assert s.lookup(0, 0.0, 8, EULER) == ((0, 1.0),)
    for n in range(8):
        assert sum(w for _, w in s.lookup(n, 0.3, 8, EULER)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args",
    [("bogus", None), ("shared", None), ("interpolated", 1), ("tied", 3), ("shared", 0)],
)
def test_bad_schedules(args):
    with pytest.raises(ValueError, match=r"weights|schedule"):
        WeightSchedule(*args)


def test_bad_lookup():
    s = WeightSchedule("untied")
    with pytest.raises(ValueError, match="layer 4"):
        s.lookup(4, 0.0, 4)
    with pytest.raises(ValueError, match="offset"):
        s.lookup(0, 1.5, 4)


def test_interpolated_runs_at_two_depths_with_the_same_parameters():
    shallow = make_stage("heun", 8, schedule=WeightSchedule("interpolated", 3))
    deep = make_stage("heun", 64, schedule=WeightSchedule("interpolated", 3))
    deep.load_state_dict(shallow.state_dict())
    x = torch.randn(16, 8, dtype=torch.float64)
    a, b = shallow(x), deep(x)
    assert a.shape == b.shape and not torch.equal(a, b)
    # both discretise the same ODE: they agree to Heun's O(h^2), far closer than to the input
    assert (a - b).norm() < 0.05 * (b - x).norm()


@pytest.mark.parametrize("schedule", [WeightSchedule("interpolated", 3), WeightSchedule("untied")])
def test_reverse_euler_reads_the_layers_own_weights(schedule: WeightSchedule) -> None:
    """x_n ≈ x_{n+1} − h f(x_{n+1}, θ_n) (seed 000, eq. 6) under every schedule: interpolated
    weights had the reverse step's offset 1 read θ(t_{n+1}), layer n + 1's function, where
    untied and shared weights read θ_n."""
    stage = make_stage("euler", 8, schedule=schedule, residual=lambda w: MLP(w, bn=False))
    x = torch.randn(4, 8, dtype=torch.float64)
    for n in range(stage.depth):
        forward = LayerCall(stage, n, RunContext(None))("f", x, 0.0)
        reverse = LayerCall(stage, n, RunContext(None), reverse=True)("f", x, 1.0)
        assert torch.equal(reverse, forward), n


def test_reverse_euler_gradients_under_interpolated_weights() -> None:
    """Reading θ(t_{n+1}) made the reconstruction depend on how fast θ moves (seed 000's
    Prop. 3 bound for eq. 6 does not): invert was 6.2e-3 and 6.3e-3 off store at N = 32
    (interpolated(3), weight seeds 0 and 1), 3.4e-4 and 2.6e-4 with θ_n."""
    torch.manual_seed(0)
    stage = make_stage(
        "euler", 32, schedule=WeightSchedule("interpolated", 3), residual=lambda w: MLP(w, bn=False)
    )
    x = torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert grad_error(run(stage, x, "invert"), run(stage, x, "store")) < 1.5e-3


def _same_outputs(a, b, x: torch.Tensor) -> None:
    a.eval(), b.eval()  # running statistics must have been carried over too
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("program", ["euler", "heun"])
@pytest.mark.parametrize(
    "src", [WeightSchedule("tied"), WeightSchedule("shared", 2), WeightSchedule("interpolated", 3)]
)
def test_expand_to_untied_same_depth_is_identical(program, src):
    x = torch.randn(16, 8, dtype=torch.float64)
    a = make_stage(program, 8, schedule=src)
    a.train()(x)  # move running statistics away from their initial values
    b = make_stage(program, 8, schedule=WeightSchedule("untied"))
    offsets = a.program.offsets
    sd = expand_state_dict(a.state_dict(), "", ["f"], (src, 8), (b.schedule, 8), offsets)
    b.load_state_dict(sd)
    _same_outputs(a, b, x)


def test_expand_tied_to_deeper_untied():
    x = torch.randn(16, 8, dtype=torch.float64)
    tied = make_stage("euler", 4, schedule=WeightSchedule("tied"))
    deep = make_stage("euler", 32, schedule=WeightSchedule("untied"))
    sd = {f"body.{k}": v for k, v in tied.state_dict().items()}
    sd = expand_state_dict(sd, "body.", ["f"], (tied.schedule, 4), (deep.schedule, 32))
    assert sorted(sd) == sorted(f"body.{k}" for k in deep.state_dict())
    deep.load_state_dict({k[5:]: v for k, v in sd.items()})
    tied_deep = make_stage("euler", 32, schedule=WeightSchedule("tied"))
    tied_deep.load_state_dict(tied.state_dict())
    _same_outputs(deep, tied_deep, x)  # the same network, now with 32 free layers


def test_expand_untied_doubles_piecewise():
    a = make_stage("euler", 2, width=2)
    sd = expand_state_dict(
        a.state_dict(), "", ["f"], (a.schedule, 2), (WeightSchedule("untied"), 4)
    )
    for j, src in enumerate([0, 0, 1, 1]):
        assert torch.equal(sd[f"f.{j}.lin1.weight"], a.state_dict()[f"f.{src}.lin1.weight"])


def test_expand_untied_nodes_blend_weights():
    a = make_stage("heun", 2, width=2)  # 3 nodes at s = 0, 1/2, 1
    sd = expand_state_dict(
        a.state_dict(), "", ["f"], (a.schedule, 2), (WeightSchedule("untied"), 4), (0.0, 1.0)
    )
    w = [a.state_dict()[f"f.{i}.lin1.weight"] for i in range(3)]
    torch.testing.assert_close(sd["f.1.lin1.weight"], (w[0] + w[1]) / 2)
    torch.testing.assert_close(sd["f.2.lin1.weight"], w[1])
    rm = a.state_dict()["f.0.bn.running_mean"]
    assert torch.equal(sd["f.1.bn.running_mean"], rm)  # buffers: nearest slot, not blended


@pytest.mark.parametrize(
    "src, dst, match",
    [
        (("untied", None, 8), ("tied", None, 8), "tied"),
        (("untied", None, 8), ("untied", None, 4), "drop layers"),
        (("shared", 2, 8), ("interpolated", 3, 8), "piecewise-constant"),
        (("interpolated", 3, 8), ("interpolated", 4, 8), "refine"),
    ],
)
def test_expand_refuses_lossy_conversions(src, dst, match):
    s, d = WeightSchedule(src[0], src[1]), WeightSchedule(dst[0], dst[1])
    a = make_stage("euler", src[2], schedule=s)
    with pytest.raises(ValueError, match=match):
        expand_state_dict(a.state_dict(), "", ["f"], (s, src[2]), (d, dst[2]))


RK4 = (0.0, 0.5, 1.0)


def _weight_at(sd: dict, s: WeightSchedule, n: int, c: float, depth: int) -> torch.Tensor:
    return sum(w * sd[f"f.{i}.lin1.weight"] for i, w in s.lookup(n, c, depth, RK4))


def test_expand_keeps_what_rk4_reads_at_half_steps_or_refuses():
    """RK4 reads weights at t + h/2, between two untied slots, which the runtime blends
    linearly: a conversion is made only when that blend is the source's θ there."""
    shared, interp, untied = (
        WeightSchedule(*a) for a in (("shared", 2), ("interpolated", 3), ("untied",))
    )
    a = make_stage("euler", 4, schedule=shared)
    with pytest.raises(ValueError, match=r"t \+ 0\.5·h \(s = 0\.375\).*θ\(s\) is not linear"):
        expand_state_dict(a.state_dict(), "", ["f"], (shared, 4), (untied, 4), RK4)
    # interpolated(3) at depth 8: control point s = 1/2 on a node, θ linear over every layer
    plain = make_stage("euler", 8, schedule=interp, residual=lambda w: MLP(w, bn=False))
    sd = expand_state_dict(plain.state_dict(), "", ["f"], (interp, 8), (untied, 8), RK4)
    for n in range(8):
        for c in RK4:
            want = _weight_at(plain.state_dict(), interp, n, c, 8)
            torch.testing.assert_close(_weight_at(sd, untied, n, c, 8), want, rtol=0, atol=1e-12)
    # ... but BatchNorm statistics come from a blend's heaviest slot: at s = 5/16 the source
    # reads control point 1's, the untied blend of nodes 2 and 3 node 2's (control point 0's)
    bn = make_stage("euler", 8, schedule=interp)
    with pytest.raises(
        ValueError, match=r"running statistics.*source slot 0, the source those of slot 1"
    ):
        expand_state_dict(bn.state_dict(), "", ["f"], (interp, 8), (untied, 8), RK4)


def test_expand_checks_slot_count():
    a = make_stage("euler", 4)
    with pytest.raises(ValueError, match="slots"):
        expand_state_dict(a.state_dict(), "", ["f"], (WeightSchedule("untied"), 6), (a.schedule, 8))


@settings(max_examples=200, deadline=None)
@given(
    mode=st.sampled_from(["tied", "untied", "shared", "interpolated"]),
    k=st.integers(2, 9),
    depth=st.integers(1, 40),
    data=st.data(),
    ahead=st.booleans(),
)
def test_lookup_is_a_convex_combination_of_existing_slots(mode, k, depth, data, ahead):
    s = WeightSchedule(mode, k if mode in ("shared", "interpolated") else None)
    offsets = HEUN if ahead else EULER
    n = data.draw(st.integers(0, depth - 1))
    c = data.draw(st.floats(0.0, 1.0))
    blend = s.lookup(n, c, depth, offsets)
    assert all(0 <= i < s.slots(depth, offsets) and w > 0 for i, w in blend)
    assert sum(w for _, w in blend) == pytest.approx(1.0)
    if (mode == "interpolated" or (mode == "untied" and ahead)) and n + 1 < depth:
        assert s.lookup(n, 1.0, depth, offsets) == s.lookup(n + 1, 0.0, depth, offsets)
