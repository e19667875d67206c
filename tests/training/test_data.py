"""Data sets and fitting a spec to them: shapes from the data, or a located refusal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from odedsl.diagnostics import DslError
from odedsl.training.data import TensorPairs, digits, load_data, synthetic
from odedsl.training.model import data_params, fit_spec

pytest.importorskip("sklearn")

FIXED_INPUT = """
network fixed(classes: int = 10) {
    input image[3, 32, 32]
    stem { conv2d(4, kernel=3, padding=1) }
    stage body = ode(2) { integrator euler residual conv2d(4, kernel=3, padding=1) }
    head { adaptive_avgpool2d(1) flatten linear(classes) }
}
"""


def test_digits_split_is_fixed_and_standardised() -> None:
    a, b = digits(), digits()
    assert (len(a.train), len(a.test)) == (1438, 359)
    assert a.shape == (1, 8, 8) and a.classes == 10
    assert isinstance(a.train, TensorPairs) and isinstance(b.train, TensorPairs)
    assert torch.equal(a.train.labels, b.train.labels)
    assert abs(float(a.train.images.mean())) < 1e-4
    assert abs(float(a.train.images.std()) - 1) < 1e-2
    assert set(a.test.labels.tolist()) == set(range(10))  # stratified


def test_synthetic_has_the_requested_shape() -> None:
    s = synthetic(channels=3, size=12)
    assert s.shape == (3, 12, 12)
    x, y = s.train[0]
    assert x.shape == (3, 12, 12) and 0 <= y < 10


def test_unknown_data_name_is_refused() -> None:
    with pytest.raises(DslError, match="neither a data set name nor a directory"):
        load_data("cifar11")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="has torchvision")
def test_image_folder_without_torchvision_names_it(tmp_path: Path) -> None:
    with pytest.raises(DslError, match="torchvision"):
        load_data(tmp_path)


def test_data_sets_channels_size_classes_and_shrinks_stride() -> None:
    declared = {"depth": 16, "channels": 3, "size": 32, "stride": 3, "classes": 10}
    got = data_params(declared, digits(), {})
    assert got == {"channels": 1, "size": 8, "classes": 10, "stride": 1}
    assert "stride" not in data_params(declared, digits(), {"stride": 2})
    assert "size" not in data_params(declared, digits(), {"size": 8})


def test_fit_spec_uses_the_data(specs: Path) -> None:
    fitted = fit_spec(specs / "resnet.ode", digits())
    assert tuple(fitted.spec.network.input_shape) == (1, 8, 8)
    assert fitted.from_data["stride"] == 1


def test_fit_spec_refuses_a_mismatch_naming_both_shapes() -> None:
    with pytest.raises(DslError) as err:
        fit_spec(FIXED_INPUT, digits())
    text = str(err.value)
    assert "[3, 32, 32]" in text and "[1, 8, 8]" in text


def test_without_scikit_learn_digits_falls_back_to_synthetic(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import odedsl.training.data as data

    def missing() -> None:
        raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr(data, "digits", missing)
    bundle = load_data("digits")
    assert bundle.name == "synthetic" and bundle.shape == (1, 8, 8) and bundle.notes
    assert "scikit-learn is not installed" in capsys.readouterr().err
