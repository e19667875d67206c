"""Seed 001's deepest-network search, CI-sized: on CPU with a cap on saved activations, store
stops where its activations pass the cap while invert, flat in depth, trains to the end."""

from __future__ import annotations

import deepest_hamiltonian as D


def test_invert_trains_deeper_than_store_under_a_memory_cap(tmp_path):
    rec = D.main(["--quick", "--no-plot", "--out", str(tmp_path), "--max-depth", "32"])
    rows = rec["rows"]
    store = [r for r in rows if r["backward"] == "store"]
    invert = [r for r in rows if r["backward"] == "invert"]
    assert store[-1]["fits"] is False and "cap" in store[-1]["reason"]
    assert store[-1]["activation_bytes"] > 2 * 2**20 >= store[-2]["activation_bytes"]
    assert all(r["fits"] for r in invert) and invert[-1]["depth"] == 32
    assert "max-depth" in invert[-1]["reason"]
    assert len({r["activation_bytes"] for r in invert}) == 1  # flat in depth, exactly
    assert rec["deepest"]["invert"] == 32 > rec["deepest"]["store"]
    assert all(len(r["losses"]) == 2 for r in rows if r["fits"])
    assert (tmp_path / "deepest_hamiltonian_quick.json").is_file()
