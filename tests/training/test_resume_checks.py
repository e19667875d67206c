"""A resume continues the run its checkpoint holds, or says why not (found by a training-CLI
audit on 2026-12-02): another spec, ``--network`` or ``--set`` value used to train a different
network from the checkpoint's weights without a word, and a damaged ``config`` was blamed on
options the user never passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from odedsl.diagnostics import DslError
from odedsl.training import train
from odedsl.training.checkpoint import CHECKPOINT, atomic_save, load_checkpoint

pytest.importorskip("sklearn")

SMALL = {"depth": 2, "width": 4}
NETWORK = """
network {name}(depth: int = 2, width: int = 4, channels: int = 1, size: int = 8) {{
    input image[channels, size, size]
    stem {{ conv2d(width, kernel=3, padding=1) }}
    stage body = ode(depth) {{
        integrator {integrator}
        residual {{ conv2d(width, kernel=3, padding=1) relu }}
    }}
    head {{ adaptive_avgpool2d(1) flatten linear(10) }}
}}
"""
#: Two networks of the same parameter shapes, Euler and Heun.
TWO = NETWORK.format(name="first", integrator="euler") + NETWORK.format(
    name="second", integrator="heun"
)


def _run(spec: Path, out: Path, **kw: object) -> None:
    train(spec, data="synthetic", epochs=1, out=out, progress=False, **kw)  # type: ignore[arg-type]


def test_another_spec_with_the_same_shapes_is_refused(specs: Path, tmp_path: Path) -> None:
    """resnet (Euler) and momentum happen to have the same parameter shapes at this size."""
    _run(specs / "resnet.ode", tmp_path, overrides={**SMALL, "stride": 1})
    with pytest.raises(DslError, match="trained network 'resnet', this spec builds 'momentum'"):
        _run(specs / "momentum.ode", tmp_path, overrides={**SMALL, "stride": 1}, resume=True)


def test_another_network_of_the_file_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "two.ode"
    spec.write_text(TWO)
    _run(spec, tmp_path / "run", network="first")
    with pytest.raises(DslError, match="trained network 'first', this spec builds 'second'"):
        _run(spec, tmp_path / "run", network="second", resume=True)


def test_an_edited_spec_is_refused_but_a_comment_is_not(tmp_path: Path) -> None:
    spec = tmp_path / "two.ode"
    spec.write_text(TWO)
    _run(spec, tmp_path / "run", network="first")
    spec.write_text("# a comment moves every line\n" + TWO)
    _run(spec, tmp_path / "run", network="first", resume=True)  # epochs done: nothing to do
    spec.write_text(TWO.replace("integrator euler", "integrator heun", 1))  # same shapes
    with pytest.raises(DslError, match=r"is not the one the checkpoint .* trained"):
        _run(spec, tmp_path / "run", network="first", resume=True)


def test_a_set_value_that_changes_the_network_is_refused(specs: Path, tmp_path: Path) -> None:
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    with pytest.raises(
        DslError, match="--set stride=2 differs from the checkpoint, which kept the spec's default"
    ):
        _run(specs / "resnet.ode", tmp_path, overrides={**SMALL, "stride": 2}, resume=True)
    with pytest.raises(DslError, match="--set size=16 differs"):
        _run(specs / "resnet.ode", tmp_path, overrides={**SMALL, "size": 16}, resume=True)
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL, resume=True)  # the same: resumes


def test_a_damaged_config_names_the_checkpoint(specs: Path, tmp_path: Path) -> None:
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    ckpt["config"]["epochs"] = 0
    atomic_save(ckpt, tmp_path / CHECKPOINT)
    with pytest.raises(DslError, match=r"checkpoint '.*' is damaged: config: .*epochs"):
        train(specs / "resnet.ode", out=tmp_path, resume=True, progress=False)


def test_backward_on_resume_names_the_spec_modes(specs: Path, tmp_path: Path) -> None:
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    with pytest.raises(DslError, match="differs from the checkpoint's each stage's own mode"):
        _run(specs / "resnet.ode", tmp_path, overrides=SMALL, backward="invert", resume=True)


def test_an_out_folder_that_cannot_be_written_is_refused_before_training(
    specs: Path, tmp_path: Path
) -> None:
    """Under a file, or holding a folder where the log goes: both failed after an epoch."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(DslError, match=r"--out '.*sub' cannot be written: Not a directory"):
        _run(specs / "resnet.ode", blocker / "sub", overrides=SMALL)
    (tmp_path / "run" / "log.json").mkdir(parents=True)
    with pytest.raises(DslError, match=r"holds a 'log\.json' that is not a file"):
        _run(specs / "resnet.ode", tmp_path / "run", overrides=SMALL)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_a_fingerprint_from_another_spec_schema_does_not_refuse(
    specs: Path, tmp_path: Path
) -> None:
    """An odedsl whose spec model gained or renamed a field describes the same network
    differently: such a checkpoint resumes on the name and weight checks (review)."""
    from odedsl.training.checkpoint import same_network

    _run(specs / "resnet.ode", tmp_path, overrides=SMALL)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    schema, digest = ckpt["fingerprint"].split(":")
    assert same_network(f"{schema}:{digest}", ckpt["fingerprint"]) is True
    assert same_network(f"{schema}:0000", ckpt["fingerprint"]) is False
    assert same_network(None, ckpt["fingerprint"]) is None
    atomic_save({**ckpt, "fingerprint": f"0123456789abcdef:{digest[::-1]}"}, tmp_path / CHECKPOINT)
    _run(specs / "resnet.ode", tmp_path, overrides=SMALL, resume=True)
