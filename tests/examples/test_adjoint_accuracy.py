"""Seed 000 Fig. 4, CI-sized on the digits: both backward modes learn, and the adjoint's
gradient (measured against backprop after training) improves with depth, Heun's more."""

from __future__ import annotations

import adjoint_accuracy_vs_depth as A


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
