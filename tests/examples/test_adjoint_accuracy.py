"""Seed 000 Fig. 4, CI-sized on the digits: both backward modes learn, and the adjoint's
gradient (measured against backprop after training) improves with depth, Heun's more."""

from __future__ import annotations

import adjoint_accuracy_vs_depth as A
import pytest


def test_adjoint_trains_and_its_gradient_error_falls_with_depth(tmp_path):
    rec = A.main(["--quick", "--no-plot", "--out", str(tmp_path)])
    rows = rec["rows"]
    assert len(rows) == 2 * 2 * len(rec["depths"])
    for r in rows:
        assert r["finite"], r
        assert r["test_accuracy"] > 0.3, r  # chance is 0.1
    inv = {(r["integrator"], r["depth"]): r for r in rows if r["backward"] == "invert"}
    lo, hi = rec["depths"][0], rec["depths"][-1]
    for integ in ("euler", "heun"):
        assert inv[(integ, hi)]["grad_error"] < 0.7 * inv[(integ, lo)]["grad_error"], inv
        assert inv[(integ, hi)]["grad_cosine"] > 0.9, inv
    for d in rec["depths"]:
        assert inv[("heun", d)]["grad_error"] < inv[("euler", d)]["grad_error"], inv
    store = [r for r in rows if r["backward"] == "store"]
    assert all(r["grad_error"] == 0.0 for r in store)


def _by_key(rec: dict) -> dict:
    return {(r["integrator"], r["backward"], r["depth"]): r for r in rec["rows"]}


def test_adjoint_trains_worse_when_shallow_on_noisy_digits(tmp_path):
    """The accuracy side of Fig. 4 on a task hard enough to show it (digits + pixel noise
    σ = 1): at N = 2 the adjoint's biased gradient leaves the training loss well above
    backprop's (Euler ~1.5×, Heun ~1.1× in three seeds), Heun's adjoint closer than Euler's."""
    rec = A.main(
        ["--noise", "1", "--epochs", "8", "--depths", "2", "--no-plot", "--out", str(tmp_path)]
    )
    assert rec["noise"] == 1.0 and (tmp_path / "adjoint_accuracy_vs_depth-noise1.json").exists()
    run = _by_key(rec)
    ratio = {
        i: run[(i, "invert", 2)]["train_loss"] / run[(i, "store", 2)]["train_loss"]
        for i in ("euler", "heun")
    }
    assert ratio["euler"] > 1.25, ratio
    assert 1.0 < ratio["heun"] < ratio["euler"] - 0.1, ratio
    for r in rec["rows"]:
        assert r["finite"] and r["test_accuracy"] > 0.5, r  # chance is 0.1


@pytest.mark.slow
def test_adjoint_matches_backprop_deep_on_noisy_digits(tmp_path):
    """... and at N = 16 it trains as far as backprop (training loss within 1.1 % in seeds
    0-2; asserted within 5 % for seed 0)."""
    rec = A.main(
        [
            "--noise",
            "1",
            "--epochs",
            "8",
            "--depths",
            "16",
            "--integrators",
            "euler",
            "--no-plot",
            "--out",
            str(tmp_path),
        ]
    )
    run = _by_key(rec)
    ratio = run[("euler", "invert", 16)]["train_loss"] / run[("euler", "store", 16)]["train_loss"]
    assert 0.95 < ratio < 1.05, ratio


def test_noise_must_be_finite_and_non_negative(capsys):
    for bad in ("-1", "nan", "inf", "1_0"):
        with pytest.raises(SystemExit) as exc:
            A.main(["--noise", bad, "--no-plot"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --noise" in err and "a finite number >= 0" in err, err
