"""Seed 001, CI-sized: activation memory of reversible networks is flat in depth with
``invert`` and linear with ``store`` (10 → 1,000 layers per stage); invert gradients match."""

from __future__ import annotations

import math

import reversible_memory as R


def test_memory_flat_with_invert_linear_with_store(tmp_path):
    rec = R.main(["--quick", "--no-plot", "--out", str(tmp_path)])
    byte = {(r["network"], r["depth"], r["backward"]): r["activation_bytes"] for r in rec["rows"]}
    for name in ("hamiltonian", "midpoint", "leapfrog"):
        inv = rec["memory_ratios"][name]["invert"]
        store = rec["memory_ratios"][name]["store"]
        assert abs(inv - 1.0) < 0.02, (name, inv)
        assert 80 < store < 101, (name, store)  # ≈ 100, less the depth-free stem and head
        # linear in depth: the 100 → 1000 increment is 10× the 10 → 100 one
        b10, b100, b1000 = (byte[(name, d, "store")] for d in (10, 100, 1000))
        assert abs((b1000 - b100) / (b100 - b10) - 10.0) < 0.2, (name, b10, b100, b1000)
        assert byte[(name, 1000, "invert")] < 0.01 * b1000
    for r in rec["rows"]:
        assert all(math.isfinite(v) for v in r["losses"]), r
        if r["depth"] <= 100:
            assert r["trained"] and r["seconds_per_step"] > 0, r
    for g in rec["gradient_gaps"]:
        assert g["grad_error"] < 1e-4, g  # exact inverses: float32 rounding only
