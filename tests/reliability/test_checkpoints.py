"""Checkpoints: loading checked against the network, conversion between weight schedules and
depths (seed 000 §5.2), and refusal of pickles that would run code.

References are independent of the conversion code: a tied net converted to untied must give
the *same outputs* (every layer reads the one tied θ either way); converted slots are compared
with the source slots they must equal; a refused pickle must leave its marker file unwritten.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import odedsl
from odedsl.checkpoints import (
    CheckpointError,
    convert_state_dict,
    load_checkpoint,
    load_plain,
    save_checkpoint,
    stage_layouts,
)

SPEC = """\
network net(depth: int = 4, width: int = 4) {
    input image[2, 6, 6]
    stem { conv2d(width, kernel=3, padding=1) }
    stage body = ode(depth) {
        integrator INTEGRATOR
        weights WEIGHTS
        backward invert
        residual { conv2d(width, kernel=3, padding=1) batchnorm2d tanh }
    }
    head { adaptive_avgpool2d(1) flatten linear(3) }
}
"""


def spec(weights: str, integrator: str = "euler") -> str:
    return SPEC.replace("WEIGHTS", weights).replace("INTEGRATOR", integrator)


def build(weights: str, depth: int = 4, integrator: str = "euler", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = odedsl.compile(spec(weights, integrator), depth=depth)
    with torch.no_grad():  # "trained": weights away from their initial values, BN stats moved
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model(torch.randn(8, *model.input_shape))
    return model


def outputs(model: nn.Module, x: torch.Tensor, train: bool) -> torch.Tensor:
    model.train(train)
    with torch.no_grad():
        return model(x)


X = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ loading
def test_round_trip_through_a_file(tmp_path: Path) -> None:
    src = build("untied")
    save_checkpoint(src, tmp_path / "w.pt")
    dst = build("untied", seed=1)
    assert not torch.equal(outputs(src, X, False), outputs(dst, X, False))
    load_checkpoint(dst, tmp_path / "w.pt")
    assert torch.equal(outputs(src, X, False), outputs(dst, X, False))
    torch.save(src.state_dict(), tmp_path / "plain.pt")  # a plain state dict loads too
    with pytest.warns(UserWarning, match="plain state dict"):
        assert load_checkpoint(build("untied", seed=2), tmp_path / "plain.pt") is not None


def _relu(weights: str = "untied", depth: int = 4) -> nn.Module:
    """The test network with relu residuals: every key and shape of the tanh one."""
    return odedsl.compile(
        spec(weights).replace("batchnorm2d tanh", "batchnorm2d relu"), depth=depth
    )


def test_a_file_of_another_network_with_the_same_shapes_is_refused(tmp_path: Path) -> None:
    """Keys, shapes and stage layouts fit; the weights fingerprint the file carries does not
    (tanh residuals' weights had loaded into relu ones silently)."""
    save_checkpoint(build("untied"), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="written for another network: its keys and sha"):
        load_checkpoint(_relu(), tmp_path / "w.pt")
    # what the same weights run under is left out: another depth (interpolated), backward mode
    save_checkpoint(build("interpolated(3)"), tmp_path / "i.pt")
    deeper = odedsl.compile(spec("interpolated(3)"), depth=8, backward="store")
    load_checkpoint(deeper, tmp_path / "i.pt")
    with pytest.raises(CheckpointError, match="another network"):
        load_checkpoint(_relu("interpolated(3)", 8), tmp_path / "i.pt")


def test_a_plain_state_dict_file_loads_with_a_warning(tmp_path: Path) -> None:
    """A bare state dict names no network: it loads (keys and shapes checked), warning that
    another spec's weights of the same shapes would too; an in-memory one (what
    convert_state_dict returns) does not warn."""
    torch.save(build("untied").state_dict(), tmp_path / "plain.pt")
    with pytest.warns(UserWarning, match="does not say which network it was written for"):
        load_checkpoint(_relu(), tmp_path / "plain.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(_relu(), build("untied").state_dict())
        save_checkpoint(build("untied"), tmp_path / "w.pt")
        load_checkpoint(build("untied", seed=3), tmp_path / "w.pt")


def test_save_checkpoint_makes_folders_writes_atomically_and_refuses_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_checkpoint raised torch's RuntimeError for a missing folder, and an interrupted
    save (a full disk, a killed job) left a truncated file in place of the last good one."""
    model = build("untied")
    target = tmp_path / "new" / "deeper" / "w.pt"
    save_checkpoint(model, target)  # folders made
    good = target.read_bytes()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(CheckpointError, match="cannot write a checkpoint to") as err:
        save_checkpoint(model, tmp_path / "a_file" / "w.pt")
    assert err.value.diagnostics[0].code == "E110"

    def full_disk(obj: object, fh: Any) -> None:
        fh.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(build("untied", seed=3), target)
    assert target.read_bytes() == good  # the last good file, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.pt"]  # no temp file left


def test_other_spec_is_refused_naming_the_first_key() -> None:
    other = odedsl.compile(spec("untied"), width=6)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build("untied"), other.state_dict())
    e = err.value
    assert (e.key, e.expected, e.found) == ("stem.conv1.weight", (4, 2, 3, 3), (6, 2, 3, 3))
    assert "key 'stem.conv1.weight' has shape [6, 2, 3, 3] in the checkpoint" in str(e)
    assert "convert_state_dict" not in str(e)  # nothing to convert: another network


def test_other_depth_is_refused_with_a_conversion_hint() -> None:
    deep = build("untied", depth=8)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(deep, build("untied", depth=4).state_dict())
    e = err.value
    assert (e.key, e.expected, e.found) == ("body.f.4.conv1.weight", (4, 4, 3, 3), None)
    assert "is missing from the checkpoint" in str(e)
    assert "stage 'body' has 8 weight slot(s) per residual" in str(e)
    assert "the checkpoint f: 4" in str(e) and "convert_state_dict" in str(e)
    with pytest.raises(CheckpointError) as err:  # and the other way round: extra keys
        load_checkpoint(build("untied", depth=4), deep.state_dict())
    assert err.value.key == "body.f.4.conv1.weight" and err.value.expected is None


def test_other_weight_mode_is_refused_with_a_conversion_hint() -> None:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build("untied"), build("tied").state_dict())
    assert err.value.key == "body.f.1.conv1.weight"
    assert "convert_state_dict" in str(err.value)


def test_same_shapes_other_layout_is_refused_when_the_file_says_so(tmp_path: Path) -> None:
    """interpolated(4) and untied depth 4 have the same keys and shapes; the layout the file
    carries tells them apart (a plain state dict cannot)."""
    src = build("interpolated(4)")
    dst = build("untied")
    assert {k: v.shape for k, v in src.state_dict().items()} == {
        k: v.shape for k, v in dst.state_dict().items()
    }
    save_checkpoint(src, tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(dst, tmp_path / "w.pt")
    msg = str(err.value)
    assert "weights interpolated(4), depth 4" in msg and "weights untied, depth 4" in msg
    assert "convert_state_dict" in msg
    save_checkpoint(build("shared(4)", depth=4), tmp_path / "s.pt")  # 4 slots: same shapes
    with pytest.raises(CheckpointError, match=r"weights shared.4., depth 4, the network has euler"):
        load_checkpoint(build("interpolated(4)", depth=8), tmp_path / "s.pt")
    save_checkpoint(build("untied", integrator="heun"), tmp_path / "h.pt")
    with pytest.raises(CheckpointError) as err:  # another integrator: nothing to convert
        load_checkpoint(build("untied", integrator="rk4"), tmp_path / "h.pt")
    assert "convert_state_dict" not in str(err.value)


@pytest.mark.parametrize("weights", ["tied", "shared(2)", "interpolated(3)"])
@pytest.mark.parametrize("integrator", ["euler", "rk4"])
def test_depth_free_weights_load_at_another_depth(
    tmp_path: Path, weights: str, integrator: str
) -> None:
    """tied, shared(k) and interpolated(k) weights do not depend on the depth (set_depth runs
    them at any): a file written at depth 4 loads at depth 8 and gives set_depth(8)'s net."""
    src = build(weights, depth=4, integrator=integrator)
    save_checkpoint(src, tmp_path / "w.pt")
    dst = odedsl.compile(spec(weights, integrator), depth=8)
    load_checkpoint(dst, tmp_path / "w.pt")
    src.body.set_depth(8)
    assert torch.equal(outputs(dst, X, False), outputs(src, X, False))


def test_depth_dependent_weights_stay_refused_at_another_depth(tmp_path: Path) -> None:
    """untied weights are one slot per layer: another depth is another network."""
    save_checkpoint(build("untied", depth=4), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="weights untied, depth 4, the network has euler, w"):
        load_checkpoint(odedsl.compile(spec("untied"), depth=8), tmp_path / "w.pt")
    save_checkpoint(build("interpolated(3)", depth=4), tmp_path / "i.pt")
    with pytest.raises(CheckpointError, match=r"euler, weights interpolated.3., depth 4, the netw"):
        load_checkpoint(odedsl.compile(spec("interpolated(3)", "heun"), depth=8), tmp_path / "i.pt")


def test_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="is not a state dict"):
        load_checkpoint(build("tied"), tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(build("tied"), tmp_path / "junk.pt")


# ------------------------------------------------------------------ pickles that run code
class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    state = build("tied").state_dict()
    state["evil"] = _Payload(marker)  # type: ignore[assignment]
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build("tied"), tmp_path / "evil.pt")
    assert not marker.exists()
    assert "weights_only" in str(err.value) and err.value.diagnostics[0].code == "E110"
    # the payload is real: an unrestricted load runs it
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_a_raw_pickle_file_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(build("tied"), tmp_path / "raw.pt")
    assert not marker.exists()
    pickle.loads((tmp_path / "raw.pt").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text", r"is not a PyTorch checkpoint: not the zip archive .*\(Unsupported operand"),
        ("truncated", r"cannot read '.*': .*zip archive"),
        ("payload", r"carries pickled objects .*\(Unsupported global: GLOBAL "),
        ("empty", r"cannot read '.*'"),
        ("words", r"is not a PyTorch checkpoint \(its bytes are not a pickle .*KeyError"),
        ("one byte", r"is not a PyTorch checkpoint \(its bytes are not a pickle .*IndexError"),
    ],
)
def test_unreadable_files_say_which_of_three_things_is_wrong(tmp_path: Path, content, message):
    """Not a torch file, a damaged one, or one carrying pickled objects: each says so (E110),
    and no payload ever runs."""
    good = tmp_path / "good.pt"
    save_checkpoint(build("tied"), good)
    path = tmp_path / f"{content}.pt"
    marker = tmp_path / "executed"
    if content == "text":
        path.write_text('{"weights": [1, 2, 3]}\n', encoding="utf-8")
    elif content == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif content == "payload":
        torch.save({"state_dict": {}, "evil": _Payload(marker)}, path)
    elif content == "words":  # torch's weights-only unpickler fails with a KeyError here
        path.write_text("hello world\n", encoding="utf-8")
    elif content == "one byte":  # ... and with an IndexError here
        path.write_bytes(b"a")
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(build("tied"), path)
    assert err.value.diagnostics[0].code == "E110"
    assert not marker.exists()


def test_paths_that_are_not_files_are_refused_unread(tmp_path: Path) -> None:
    """A folder or a device (``/dev/zero`` would be read without end) is never opened."""
    model = build("tied")
    for path in (tmp_path, Path("/dev/zero")):
        if path.exists():
            with pytest.raises(CheckpointError, match="is not a regular file"):
                load_checkpoint(model, path)
    with pytest.raises(CheckpointError, match="it is a folder"):
        save_checkpoint(model, tmp_path)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ({}, "KeyError: 'stages'"),
        ({"stages": [1]}, "AttributeError"),
        ({"stages": {"body": {}}, "state_dict": {}}, "KeyError: 'integrator'"),
        ({"stages": {"body": {"integrator": "euler", "depth": "x"}}}, "ValueError"),
    ],
)
def test_damaged_layouts_of_a_weights_file_are_located(damage: dict, fragment: str) -> None:
    data = {"format": "odedsl-weights", **damage}
    with pytest.raises(CheckpointError, match="stage layouts are damaged") as err:
        load_checkpoint(build("tied"), data)
    assert fragment in err.value.diagnostics[0].message


# ------------------------------------------------------------------ conversion
@pytest.mark.parametrize("train", [True, False])
def test_tied_to_untied_same_depth_gives_identical_outputs(train: bool) -> None:
    tied = build("tied")
    untied = build("untied", seed=1)
    load_checkpoint(untied, convert_state_dict(tied, tied.state_dict(), untied))
    for n in range(4):  # every slot is the tied weight, running statistics included
        for local in ("conv1.weight", "bn1.running_mean", "bn1.weight"):
            assert torch.equal(
                untied.state_dict()[f"body.f.{n}.{local}"], tied.state_dict()[f"body.f.0.{local}"]
            )
    torch.testing.assert_close(outputs(untied, X, train), outputs(tied, X, train), rtol=0, atol=0)


def test_tied_depth_4_to_untied_depth_16_runs_and_trains(tmp_path: Path) -> None:
    tied = build("tied", depth=4)
    deep = odedsl.compile(spec("untied"), depth=16)
    converted = convert_state_dict(spec("tied"), tied.state_dict(), deep, depth=4)
    save_checkpoint(tied, tmp_path / "tied.pt")  # the file route: layouts checked first
    with pytest.raises(CheckpointError, match="convert_state_dict"):
        load_checkpoint(deep, tmp_path / "tied.pt")
    load_checkpoint(deep, converted)
    assert len(deep.body.f) == 16
    assert all(torch.equal(m.conv1.weight, tied.body.f[0].conv1.weight) for m in deep.body.f)
    # at any depth a tied θ is the same ODE: depth 16 approximates depth 4's flow
    gap = (outputs(deep, X, False) - outputs(tied, X, False)).abs().max()
    assert gap < 0.5 * outputs(tied, X, False).abs().max()
    deep.train()
    opt = torch.optim.SGD(deep.parameters(), lr=0.05)
    target = torch.randint(0, 3, (5,))
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(deep(X), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    slots = torch.stack([m.conv1.weight for m in deep.body.f])
    assert (slots - slots[0]).abs().amax() > 0  # untied: the slots now train apart


@pytest.mark.parametrize("integrator", ["euler", "heun"])
def test_interpolated_to_untied_gives_identical_outputs(integrator: str) -> None:
    """θ(s) piecewise linear through 3 control points, sampled at untied slots: at depth 8
    every layer (and Heun's corrector at t + h) reads the same θ either way."""
    src = build("interpolated(3)", depth=8, integrator=integrator)
    dst = odedsl.compile(spec("untied", integrator), depth=8)
    load_checkpoint(dst, convert_state_dict(src, src.state_dict(), dst))
    torch.testing.assert_close(outputs(dst, X, True), outputs(src, X, True))
    slots = 9 if integrator == "heun" else 8  # the corrector reads θ_{n+1}: N + 1 slots
    assert len(dst.body.f) == slots


def _float64(text: str, depth: int) -> nn.Module:
    torch.manual_seed(0)
    model = odedsl.compile(text, depth=depth, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model(torch.randn(8, *model.input_shape, dtype=torch.float64))
    return model


@pytest.mark.parametrize(
    ("integrator", "weights", "depth", "batchnorm"),
    [
        ("euler", "shared(2)", 4, True),
        ("euler", "interpolated(4)", 4, True),
        ("heun", "shared(2)", 4, True),
        ("heun", "interpolated(4)", 4, True),
        ("rk4", "interpolated(3)", 6, True),  # control point s = 1/2 on node 3; see below
        ("rk4", "interpolated(3)", 8, False),
    ],
)
def test_conversions_to_untied_keep_the_outputs_exactly(
    integrator: str, weights: str, depth: int, batchnorm: bool
) -> None:
    """Euler reads weights at t, Heun at t and t + h: the untied slots' own times. RK4 also
    reads t + h/2, between two slots, which untied blends linearly: exact only where θ(s) is
    linear over each layer, and (BatchNorm) where the heaviest slot holds the source's running
    statistics. The reference is the source network itself, in eval and train mode."""
    text = spec(weights, integrator)
    text = text if batchnorm else text.replace("batchnorm2d tanh", "tanh")
    src = _float64(text, depth)
    dst = odedsl.compile(text.replace(weights, "untied"), depth=depth, dtype=torch.float64)
    load_checkpoint(dst, convert_state_dict(src, src.state_dict(), dst))
    x = X.double()
    for train in (False, True):  # eval first: a train-mode forward moves the statistics
        torch.testing.assert_close(
            outputs(dst, x, train), outputs(src, x, train), rtol=0, atol=1e-12
        )


@pytest.mark.parametrize(
    ("weights", "depth", "why"),
    [
        ("shared(2)", 4, "not linear"),  # θ jumps at s = 1/2: no untied slots reproduce it
        ("interpolated(4)", 4, "not linear"),  # control points s = 1/3, 2/3 inside layers 1, 2
        ("interpolated(3)", 8, "running statistics"),  # θ linear, BatchNorm's statistics not
    ],
)
def test_conversions_to_untied_that_rk4_would_read_otherwise_are_refused(
    weights: str, depth: int, why: str
) -> None:
    """Before the refusal these converted silently, eval-mode outputs 0.02 to 0.09 off."""
    src = _float64(spec(weights, "rk4"), depth)
    dst = odedsl.compile(spec("untied", "rk4"), depth=depth, dtype=torch.float64)
    with pytest.raises(CheckpointError, match=why) as err:
        convert_state_dict(src, src.state_dict(), dst)
    message = err.value.diagnostics[0].message
    assert "integrator 'rk4'" in message and why in message and "exactly" in message
    assert "keep the source's weights rule" in (err.value.diagnostics[0].hint or "")


def test_euler_statistics_between_two_blended_layouts_are_refused_with_a_true_hint() -> None:
    """Euler converts to untied exactly, but not between two blending layouts: the hint said
    'euler, heun convert exactly' to an Euler network it had just refused."""
    src = _float64(spec("interpolated(2)", "euler"), 4)
    dst = odedsl.compile(spec("interpolated(3)", "euler"), depth=4, dtype=torch.float64)
    with pytest.raises(CheckpointError, match="running statistics") as err:
        convert_state_dict(src, src.state_dict(), dst)
    hint = err.value.diagnostics[0].hint or ""
    assert "to untied with an integrator that evaluates residuals at t and t + h only" in hint
    assert "convert exactly" not in hint


def test_shallower_to_deeper_untied_repeats_each_layer() -> None:
    src = build("untied", depth=4)
    dst = odedsl.compile(spec("untied"), depth=8)
    load_checkpoint(dst, convert_state_dict(src, src.state_dict(), dst))
    for j in range(8):
        assert torch.equal(dst.body.f[j].conv1.weight, src.body.f[j // 2].conv1.weight)


@pytest.mark.parametrize(
    ("src", "dst", "why"),
    [
        (("untied", 4), ("tied", 4), "cannot hold the depth-varying weights"),
        (("untied", 8), ("untied", 4), "would drop layers"),
        (("untied", 4), ("interpolated(3)", 4), "not piecewise linear"),
    ],
)
def test_lossy_conversions_are_refused(
    src: tuple[str, int], dst: tuple[str, int], why: str
) -> None:
    source = build(*src)
    target = odedsl.compile(spec(dst[0]), depth=dst[1])
    with pytest.raises(CheckpointError, match=why):
        convert_state_dict(source, source.state_dict(), target)


def test_conversion_needs_the_same_integrator() -> None:
    src = build("tied", integrator="heun")
    with pytest.raises(CheckpointError, match="'heun' in the source, 'euler' in the network"):
        convert_state_dict(src, src.state_dict(), build("untied"))


def test_multi_stage_conversion_of_a_shipped_spec() -> None:
    """Hamiltonian network, 3 stages of two residuals (f, g): tied → untied per stage."""
    path = Path(__file__).parents[2] / "specs" / "hamiltonian.ode"
    small = {"depth": 2, "size": 8}
    text = path.read_text()
    torch.manual_seed(0)
    tied = odedsl.compile(path, **small)
    tied_layouts = stage_layouts(tied)
    assert [lay.slots for lay in tied_layouts.values()] == [2, 2, 2]  # untied by default
    src_text = text.replace("integrator hamiltonian", "integrator hamiltonian weights tied")
    src = odedsl.compile(src_text.replace('import "blocks.ode"', _blocks()), **small)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1 * torch.randn_like(p))
    converted = convert_state_dict(src, src.state_dict(), tied)
    load_checkpoint(tied, converted)
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(outputs(tied, x, False), outputs(src, x, False))


def _blocks() -> str:
    return (Path(__file__).parents[2] / "specs" / "blocks.ode").read_text()


def test_layouts_of_a_spec_match_the_compiled_model() -> None:
    text = spec("shared(2)", "heun")
    assert stage_layouts(text, depth=6) == stage_layouts(odedsl.compile(text, depth=6))


# ------------------------------------------------------------------ hints: what to do
def _hint(err: pytest.ExceptionInfo[CheckpointError]) -> str:
    (d,) = err.value.diagnostics
    assert d.hint and f"hint: {d.hint}" in str(err.value), d.render()
    return d.hint


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("missing", "no file at that path; relative paths start at the current folder"),
        ("empty", "the file is empty: write it again with odedsl.save_checkpoint"),
        ("truncated", "the file is truncated or damaged"),
        ("folder", "name the checkpoint file itself (e.g. model.pt), not a folder"),
        (
            "nested",
            "it holds 'state_dict': pass the state dict inside, e.g. checkpoint['state_dict']",
        ),
        (
            "numbers",
            "torch.save(model.state_dict(), path) writes: parameter names mapped to tensors",
        ),
    ],
)
def test_an_unusable_file_says_what_to_do(tmp_path: Path, content: str, fragment: str) -> None:
    model = build("tied")
    path = tmp_path / f"{content}.pt"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        save_checkpoint(model, tmp_path / "good.pt")
        path.write_bytes((tmp_path / "good.pt").read_bytes()[:1000])
    elif content == "folder":
        path.mkdir()
    elif content == "nested":  # as other trainers write: the weights one level down
        torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    elif content == "numbers":
        torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    assert err.value.diagnostics[0].code == "E110"
    assert fragment in _hint(err)


def test_the_nested_state_dict_named_by_the_hint_loads(tmp_path: Path) -> None:
    model = build("tied")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(build("tied", seed=1), tmp_path / "x.pt")
    checkpoint = torch.load(tmp_path / "x.pt", weights_only=True)
    load_checkpoint(build("tied", seed=1), checkpoint["state_dict"])


def test_a_checkpoint_of_a_network_with_more_stages_lists_the_networks_stages(
    tmp_path: Path,
) -> None:
    extra = "    stage extra = ode(2) { integrator euler residual { tanh } }\n    head"
    save_checkpoint(odedsl.compile(spec("tied").replace("    head", extra)), tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="has an ODE stage 'extra' the network lacks") as err:
        load_checkpoint(build("tied"), tmp_path / "two.pt")
    assert "the network's ODE stages are 'body'" in _hint(err)


def test_another_integrator_is_not_offered_a_conversion(tmp_path: Path) -> None:
    save_checkpoint(build("untied", integrator="heun"), tmp_path / "h.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build("untied", integrator="rk4"), tmp_path / "h.pt")
    assert _hint(err).startswith("no conversion keeps these weights: load it into the spec")
    src = build("tied", integrator="heun")
    with pytest.raises(CheckpointError) as err:
        convert_state_dict(src, src.state_dict(), build("untied"))
    assert "give the network's stage the source's integrator (heun, weights tied" in _hint(err)


def test_a_lossy_conversion_lists_the_conversions_that_exist() -> None:
    source = build("untied", depth=8)
    with pytest.raises(CheckpointError, match="would drop layers") as err:
        convert_state_dict(source, source.state_dict(), odedsl.compile(spec("untied"), depth=4))
    assert "from untied to a deeper untied stage" in _hint(err)
    assert "from tied to any rule" in _hint(err)


def test_a_state_dict_not_written_for_the_source_says_so() -> None:
    """Source says tied depth 4, the state dict has the 4 slots of an untied stage."""
    weights = build("untied").state_dict()
    with pytest.raises(CheckpointError, match="expected slot < 1 for tied at depth 4") as err:
        convert_state_dict(build("tied"), weights, odedsl.compile(spec("untied"), depth=8))
    assert "pass as source the spec (and parameter values) or model it was written for" in _hint(
        err
    )


class _System:
    """Unpickling this would run a shell command (``os.system``): torch names it a blocked
    global, without the ``WeightsUnpickler error:`` prefix the reason was read from."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("exit 0",))


def test_a_refused_payload_is_named_without_torchs_advice_to_load_it_unsafely(
    tmp_path: Path,
) -> None:
    """The message used to quote torch's first paragraph, "re-running with weights_only set
    to False will likely succeed", cut before its warning that this runs arbitrary code."""
    path = tmp_path / "system.pt"
    torch.save({"state_dict": {}, "evil": _System()}, path)
    with pytest.raises(CheckpointError) as err:
        load_plain(path, "checkpoint 'system.pt'")
    text = str(err.value)
    assert "carries pickled objects that weights_only loading refuses" in text
    assert "system" in text.split("refuses", 1)[1] and "False" not in text


def test_the_checkpoint_functions_are_odedsl_s_own_names() -> None:
    """Messages say odedsl.save_checkpoint; it only existed as odedsl.checkpoints's."""
    import odedsl
    import odedsl.checkpoints as ckpt

    for name in ("save_checkpoint", "load_checkpoint", "convert_state_dict"):
        assert getattr(odedsl, name) is getattr(ckpt, name) and name in odedsl.__all__
    assert all(getattr(odedsl, name) is not None for name in odedsl.__all__)


def test_a_training_checkpoint_says_which_network_it_trained(tmp_path: Path) -> None:
    """``odedsl train``'s checkpoint.pt held a bare state dict under "model": loaded with
    load_checkpoint it warned of an unchecked network, and loaded into another of the same
    shapes. It now carries the weights file's layouts and fingerprint."""
    from odedsl.training import train

    digits = spec("untied").replace("image[2, 6, 6]", "image[1, 8, 8]").replace("(3)", "(10)")
    source = tmp_path / "tanh.ode"
    source.write_text(digits)
    train(source, data="synthetic", epochs=1, out=tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(odedsl.compile(digits), ckpt)
    with pytest.raises(CheckpointError, match="written for another network"):
        load_checkpoint(
            odedsl.compile(digits.replace("batchnorm2d tanh", "batchnorm2d relu")), ckpt
        )
    with pytest.raises(CheckpointError, match="stage"):  # a layout the file names, refused
        load_checkpoint(odedsl.compile(digits.replace("weights untied", "weights tied")), ckpt)
