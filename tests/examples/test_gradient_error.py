"""Seed 000 Fig. 3c, CI-sized: the adjoint's gradient error falls as 1/N for the ResNet and
faster for the HeunNet, which stays below it (weights of a trained tied net copied in depth)."""

from __future__ import annotations

import itertools
import math

import gradient_error_vs_depth as G


def test_gradient_error_falls_with_depth_heun_below_euler(tmp_path):
    # Depths up to 16: beyond, with ReLU residuals and 16 samples, a sample whose pre-activation
    # crosses zero between the forward and the reconstructed state can flatten Heun's curve, and
    # whether one does depends on the CPU's rounding during the tied net's training (an Intel
    # Xeon flattened at N = 32 where an AMD EPYC did not).
    rec = G.main(["--quick", "--no-plot", "--out", str(tmp_path), "--depths", "4", "8", "16"])
    rows = rec["rows"]
    err = {(r["integrator"], r["depth"]): r["grad_error"] for r in rows}
    assert all(math.isfinite(e) and e > 0 for e in err.values()), err
    # Prop. 4: O(1/N) for the reverse Euler scheme
    assert -1.4 < rec["slopes"]["euler"] < -0.7, rec["slopes"]
    assert -1.3 < rec["reconstruction_slopes"]["euler"] < -0.7, rec["reconstruction_slopes"]
    # monotone decrease, and a large total drop (not rounding noise)
    depths = rec["depths"]
    for integ in ("euler", "heun"):
        seq = [err[(integ, d)] for d in depths]
        assert all(a > b for a, b in itertools.pairwise(seq)), (integ, seq)
    # Prop. 6 with weights constant in depth (Δ = 0): Heun below Euler, and steeper
    for d in depths:
        assert err[("heun", d)] < 0.2 * err[("euler", d)], (d, err)
    assert rec["slopes"]["heun"] < rec["slopes"]["euler"] - 0.5, rec["slopes"]
    assert rec["reconstruction_slopes"]["heun"] < -2.5, rec["reconstruction_slopes"]
    assert (tmp_path / "gradient_error_vs_depth.json").is_file()
