"""Seed 000 §5.2, CI-sized: a tied net copied to a deeper untied one keeps its accuracy
(per-layer BatchNorm statistics), and fine-tuning it with the adjoint does not break it."""

from __future__ import annotations

import tied_to_untied as T


def test_tied_to_untied_then_adjoint_finetune(tmp_path):
    rec = T.main(["--quick", "--no-plot", "--out", str(tmp_path)])
    s = rec["summary"]
    tied = s["tied"]["recalibrated"]
    assert tied > 0.5, s  # chance is 0.1
    # Euler with step 1/N at depth 8 vs 2: the same ODE, a finer discretisation
    assert abs(s["converted"]["recalibrated"] - tied) < 0.08, s
    assert s["finetuned_adjoint"]["recalibrated"] > s["converted"]["recalibrated"] - 0.03, s
    assert (
        abs(s["finetuned_adjoint"]["recalibrated"] - s["finetuned_backprop"]["recalibrated"]) < 0.05
    ), s
    assert all(d["finetuned_adjoint"]["finite"] for d in rec["seeds_detail"])


def test_noisy_digits_run_is_labelled_and_harder(tmp_path):
    """``--noise σ``: the same pipeline on digits with a fixed pixel-noise draw, written under
    its own name; the task is harder (below the plain run's accuracy) yet learnt."""
    rec = T.main(["--quick", "--noise", "1", "--no-plot", "--out", str(tmp_path)])
    assert rec["noise"] == 1.0 and (tmp_path / "tied_to_untied-noise1.json").exists()
    assert "pixel noise" in rec["caption"] and "--noise 1" in rec["command"]
    tied = rec["summary"]["tied"]["recalibrated"]
    assert 0.3 < tied < 0.9, rec["summary"]  # chance 0.1; the plain digits reach ~0.99
