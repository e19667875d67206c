"""Generated modules against ``odedsl.compile``: the same state_dict keys, outputs, gradients
and BatchNorm statistics, for every shipped network and backward mode, in a fresh interpreter
(plain: importing ``odedsl.runtime``; standalone: with ``odedsl`` made unimportable)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.spec.model import StageSpec

from .helpers import (
    CASES,
    import_file,
    network_specs,
    perturbed_state,
    run_python,
    small_params,
    write,
)
from .worker import forward_backward

WORKER = Path(__file__).with_name("worker.py")
SPECS = network_specs()
MODES = ("store", "checkpoint(2)", "invert")
CASES_ = [(spec, mode) for spec in SPECS for mode in MODES]


def _modes(path: Path) -> tuple[str, ...]:
    inverses = {s.inverse for s in odedsl.load_spec(path).network.stages}
    return MODES if "none" not in inverses else MODES[:2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Build every spec both ways, compute the references here, run the generated files in two
    subprocesses (plain and standalone), and collect the results."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("equivalence")
    jobs: dict[str, list[dict[str, str]]] = {"plain": [], "standalone": []}
    expected: dict[tuple[str, str], dict[str, object]] = {}
    for path in SPECS:
        params = small_params(path)
        for variant in jobs:
            files = write(path, tmp / variant, standalone=variant == "standalone", **params)
            module = next(iter(files))[:-3]
        for mode in _modes(path):
            torch.manual_seed(1)
            ref = odedsl.compile(path, backward=mode, dtype=torch.float64, **params)
            state = perturbed_state(ref)
            ref.load_state_dict(state)
            x = torch.randn(3, *ref.input_shape, dtype=torch.float64)
            ref_file = tmp / f"{path.stem}-{mode}.ref.pt"
            torch.save({"state": state, "x": x}, ref_file)
            torch.manual_seed(0)
            expected[(path.stem, mode)] = {
                "result": forward_backward(ref, x),
                "keys": list(ref.state_dict()),
                "compiled": (path, mode, params),
            }
            for variant, todo in jobs.items():
                result = tmp / f"{path.stem}-{mode}.{variant}.pt"
                todo.append(
                    {
                        "folder": str(tmp / variant),
                        "module": module,
                        "mode": mode,
                        "ref": str(ref_file),
                        "result": str(result),
                    }
                )
    stdout = {}
    for variant, todo in jobs.items():
        torch.save(todo, tmp / f"{variant}.jobs.pt")
        proc = run_python(
            [str(WORKER), str(tmp / f"{variant}.jobs.pt")],
            cwd=tmp,
            block_odedsl=variant == "standalone",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        stdout[variant] = proc.stdout.strip().splitlines()[-1]
    return {"tmp": tmp, "expected": expected, "stdout": stdout}


def test_standalone_ran_without_odedsl(runs: dict) -> None:
    assert runs["stdout"] == {"plain": "importable", "standalone": "blocked"}
    for stem, mode in runs["expected"]:
        got = torch.load(runs["tmp"] / f"{stem}-{mode}.standalone.pt", weights_only=False)
        assert got["odedsl_modules"] == []


@pytest.mark.parametrize("variant", ["plain", "standalone"])
@pytest.mark.parametrize(("spec", "mode"), CASES_, ids=[f"{s.stem}-{m}" for s, m in CASES_])
def test_same_outputs_gradients_and_keys(runs: dict, spec: Path, mode: str, variant: str) -> None:
    if (spec.stem, mode) not in runs["expected"]:
        pytest.skip(f"{spec.name} has a stage without inverse")
    want = runs["expected"][(spec.stem, mode)]
    got = torch.load(runs["tmp"] / f"{spec.stem}-{mode}.{variant}.pt", weights_only=False)
    assert got["keys"] == want["keys"]
    assert set(got["result"]) == set(want["result"])
    for name, value in want["result"].items():
        torch.testing.assert_close(got["result"][name], value, rtol=1e-12, atol=1e-12, msg=name)
    # ... and the generated module's weights load into the compiled one, strictly.
    path, mode_, params = want["compiled"]
    compiled = odedsl.compile(path, backward=mode_, dtype=torch.float64, **params)
    compiled.load_state_dict(got["state"])


def test_kitchen_sink_is_bitwise_identical(tmp_path: Path) -> None:
    """Every layer kind, every standard integrator plus a user one, dropout replay: in-process,
    the generated code computes exactly (bit for bit) what the compiled module computes."""
    spec = CASES / "kitchen.ode"
    module = import_file(write(spec, tmp_path)["kitchen.py"])
    for mode in (None, "store", "checkpoint(1)"):
        torch.manual_seed(3)
        ref = odedsl.compile(spec, backward=mode, dtype=torch.float64)
        torch.manual_seed(3)
        gen = module.build(backward=mode, dtype=torch.float64)
        # same construction order: the same seed gives the same initial weights
        for (k, a), (k2, b) in zip(ref.state_dict().items(), gen.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(a, b), k
        state = perturbed_state(ref)
        ref.load_state_dict(state)
        gen.load_state_dict(state)
        x = torch.randn(4, *ref.input_shape, dtype=torch.float64)
        torch.manual_seed(5)
        want = forward_backward(ref, x)
        torch.manual_seed(5)
        got = forward_backward(gen, x)
        assert set(got) == set(want)
        for name in want:
            assert torch.equal(got[name], want[name]), (mode, name)
        ref.eval()
        gen.eval()
        assert torch.equal(ref(x), gen(x))
        # a generated network pickles and deep-copies (EMA copies, torch.save(model))
        for twin in (pickle.loads(pickle.dumps(gen)), copy.deepcopy(gen)):
            assert torch.equal(twin.eval()(x), gen(x))


def test_generated_stage_set_depth_follows_the_depth(tmp_path: Path) -> None:
    """The generated stage classes wrote the spec's step out, so set_depth kept h = 1/N_old."""
    spec = tmp_path / "tied.ode"
    spec.write_text(
        "network tied(depth: int = 4) { input vector[3] stage body = ode(depth) {"
        " integrator heun weights tied residual { linear(3) tanh } } }\n"
    )
    module = import_file(write(spec, tmp_path)["tied.py"])
    gen = module.build(dtype=torch.float64)
    gen.body.set_depth(8)
    ref = odedsl.compile(spec, depth=8, dtype=torch.float64)
    ref.load_state_dict(gen.state_dict())
    x = torch.randn(5, 3, dtype=torch.float64)
    assert gen.body.h == ref.body.h == 1 / 8
    torch.testing.assert_close(gen(x), ref(x), rtol=1e-13, atol=1e-13)


def test_every_layer_kind_has_an_exporter_and_is_in_the_kitchen_sink() -> None:
    from odedsl.compiler.layers import BUILDERS
    from odedsl.export.layers import CALLS

    assert set(CALLS) == set(BUILDERS)
    net = odedsl.load_spec(CASES / "kitchen.ode").network
    seqs = [p.body for p in net.parts if not isinstance(p, StageSpec)]
    seqs += [s for p in net.stages for s in p.residuals.values()]
    assert {layer.kind for s in seqs for layer in s.layers} == set(BUILDERS)


def test_generated_module_carries_the_weights_fingerprint(tmp_path: Path) -> None:
    """A checkpoint of an exported module named no network (the class had no fingerprint), so
    load_checkpoint could not refuse another network's weights of the same shapes."""
    from odedsl.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

    spec = tmp_path / "net.ode"
    text = (
        "network net(depth: int = 3) { input vector[3] stage body = ode(depth) {"
        " integrator heun weights tied residual { linear(3) tanh } } }\n"
    )
    spec.write_text(text)
    gen = import_file(write(spec, tmp_path)["net.py"]).build()
    assert gen.weights_fingerprint == odedsl.compile(spec).weights_fingerprint
    save_checkpoint(gen, tmp_path / "w.pt")
    load_checkpoint(odedsl.compile(spec, depth=5), tmp_path / "w.pt")  # tied: any depth
    with pytest.raises(CheckpointError, match="another network"):
        load_checkpoint(odedsl.compile(text.replace("tanh", "relu")), tmp_path / "w.pt")
