"""CI-sized runs of the benchmarks (``--quick``): memory ordering and gradient agreement.

Times are printed by the scripts but never asserted: CI machines are shared and noisy. What
must hold on any machine is structural: invert keeps a constant number of states whatever
the depth, store keeps a number linear in depth, checkpoint keeps fewer than store, and the
exact inverses (and every peer that claims exactness at these depths) reproduce the plain
backprop gradient to float64 rounding.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import compile as compile_bench
from benchmarks import modes, peers


def _quiet(*_: Any) -> None:
    pass


@pytest.fixture(scope="module")
def modes_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("modes")
    return modes.main(["--quick", "--out", str(out), "--no-plot"], log=_quiet)


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("peers")
    return peers.main(["--quick", "--out", str(out), "--no-plot"], log=_quiet)


def _by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[k] for k in keys): r for r in rows}


def test_modes_writes_json(modes_run: dict[str, Any], tmp_path: Path) -> None:
    assert modes_run["benchmark"] == "modes"
    assert {r["integrator"] for r in modes_run["rows"]} == set(modes.INTEGRATORS)
    assert all(r["time_s"] > 0 for r in modes_run["rows"])


def test_modes_memory_ordering(modes_run: dict[str, Any]) -> None:
    rows = modes_run["rows"]
    lo, hi = modes_run["config"]["depths"]
    by = {(r["integrator"], r["depth"], r["mode"].split("(")[0]): r for r in rows}
    for integrator in modes.INTEGRATORS:
        inv_lo, inv_hi = by[(integrator, lo, "invert")], by[(integrator, hi, "invert")]
        st_lo, st_hi = by[(integrator, lo, "store")], by[(integrator, hi, "store")]
        ck_hi = by[(integrator, hi, "checkpoint")]
        assert inv_hi["anchors_float32"] == 0, integrator  # no re-anchoring at these depths
        assert inv_hi["saved_bytes"] == pytest.approx(inv_lo["saved_bytes"], rel=0.02), integrator
        growth = st_hi["saved_bytes"] / st_lo["saved_bytes"]
        assert 0.8 * hi / lo <= growth <= 1.1 * hi / lo, (integrator, growth)
        assert inv_hi["saved_bytes"] < ck_hi["saved_bytes"] < st_hi["saved_bytes"], integrator


def test_modes_gradients(modes_run: dict[str, Any]) -> None:
    rows = modes_run["rows"]
    lo, hi = modes_run["config"]["depths"]
    by = {(r["integrator"], r["depth"], r["mode"].split("(")[0]): r for r in rows}
    for integrator in modes.INTEGRATORS:
        for n in (lo, hi):
            inv = by[(integrator, n, "invert")]
            assert by[(integrator, n, "checkpoint")]["grad_err_float64"] < 1e-12, integrator
            if inv["kind"] == "exact":
                assert inv["grad_err_float64"] < 1e-10, (integrator, n)
            elif inv["kind"] == "exact-unstable":
                assert inv["grad_err_float64"] < 1e-8, (integrator, n)
        # Approximate inverses: O(Δ/N) with Δ the weights' variation in depth (seed 000,
        # Prop. 5-6); random untied weights vary O(1) per layer, so the error need not shrink
        # with N here, only stay small.
        if by[(integrator, hi, "invert")]["kind"] == "approximate":
            assert by[(integrator, hi, "invert")]["grad_err_float64"] < 0.05, integrator


def test_peers_memory_and_gradients(peers_run: dict[str, Any]) -> None:
    rows = peers_run["rows"]
    lo, hi = peers_run["config"]["depths"]
    by = _by(rows, "method", "depth")
    flat = [m for m, n in by if n == hi and ("invert" in m or "memory-free" in m)]
    flat += [m for m, n in by if n == hi and ("memcnn" in m or "odeint_adjoint" in m)]
    for method in flat:
        assert by[(method, hi)]["saved_bytes"] == pytest.approx(
            by[(method, lo)]["saved_bytes"], rel=0.02
        ), method
    linear = [m for m, n in by if n == hi and ("store" in m or m.startswith("plain"))]
    for method in linear:
        growth = by[(method, hi)]["saved_bytes"] / by[(method, lo)]["saved_bytes"]
        assert 0.8 * hi / lo <= growth <= 1.1 * hi / lo, (method, growth)
    exact = [
        "odedsl hamiltonian invert",
        "odedsl midpoint invert",
        "odedsl leapfrog invert",
        "odedsl additive_coupling invert",
        "odedsl momentum invert",
        "checkpoint every layer",
        "odedsl euler store",
    ]
    if "memcnn" not in peers_run["skipped"]:
        exact.append("memcnn InvertibleModuleWrapper")
    if "torchdiffeq" not in peers_run["skipped"]:
        exact.append("torchdiffeq odeint euler")  # the same N Euler steps as the plain loop
    for method in exact:
        for n in (lo, hi):
            assert by[(method, n)]["grad_err_float64"] < 1e-10, (method, n)
    # float32 against the exact gradient: rounding only, for odedsl's exact inverses as for
    # plain float32 backprop (issue 8's target: <= 1e-5 for exact modes)
    for method in [m for m in exact if m.startswith("odedsl") and m.endswith("invert")]:
        for n in (lo, hi):
            assert by[(method, n)]["grad_err_float32"] < 1e-5, (method, n)
            assert by[(method, n)]["grad_err_float32_vs_baseline"] < 1e-5, (method, n)


@pytest.mark.skipif(importlib.util.find_spec("torchdiffeq") is None, reason="torchdiffeq")
def test_peers_adjoint_is_approximate(peers_run: dict[str, Any]) -> None:
    """The adjoint ODE is solved backwards with the same fixed step: O(h) error, shrinking."""
    by = _by(peers_run["rows"], "method", "depth")
    lo, hi = peers_run["config"]["depths"]
    err_lo = by[("torchdiffeq odeint_adjoint euler", lo)]["grad_err_float64"]
    err_hi = by[("torchdiffeq odeint_adjoint euler", hi)]["grad_err_float64"]
    assert err_hi < err_lo < 0.5


def test_skipped_peers_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that fails to import is named with the reason, not a crash."""
    real = importlib.import_module

    def fake(name: str, *args: Any) -> Any:
        if name == "memcnn":
            raise ImportError("no module named memcnn (simulated)")
        return real(name, *args)

    monkeypatch.setattr(peers.importlib, "import_module", fake)
    found, missing = peers.import_peers()
    assert "memcnn" in missing and "simulated" in missing["memcnn"]
    assert "memcnn" not in found
    args = peers.parse_args(["--quick", "--groups", "coupling"])
    names = [s.name for s in peers.specs_at(4, args, found)]
    assert "memcnn InvertibleModuleWrapper" not in names
    assert "odedsl additive_coupling invert" in names


def test_overhead_smoke(tmp_path: Path) -> None:
    """The overhead reproducer runs (its times are printed, not asserted)."""
    from benchmarks import overhead

    argv = "--width 8 --hidden 8 --batch 8 --depth 10 --rounds 1 --integrators euler".split()
    argv += "--features euler hamiltonian --feature-depth 4 --feature-rounds 1".split()
    out = overhead.main([*argv, "--out", str(tmp_path)], log=_quiet)
    assert out["arithmetic"]["floor_exact"] > 1.0
    assert set(out["fixed"]["euler"]) >= {"store", "invert", "hand-written Function"}
    assert out["features"]["euler"]["feature"] == "residual memo"
    assert out["features"]["hamiltonian"]["feature"] == "drift sketch"
    assert "invert, no backward probe" in out["fixed"]["euler"]
    assert set(out["measuring"]) == {"hamiltonian", "momentum"}
    assert out["measuring"]["momentum"]["anchors"] >= 0


def test_overhead_measuring_row_measures_every_time(monkeypatch) -> None:
    """The "measuring" call clears what its stage measured, so it measures in every round
    (and the steady one never again)."""
    import odedsl.runtime.invert as invert_module
    from benchmarks import overhead

    calls: list[int] = []
    real = invert_module._measure
    monkeypatch.setattr(invert_module, "_measure", lambda *a: calls.append(1) or real(*a))
    tiny = overhead.Residual(width=4, hidden=4, batch=4)
    overhead.measuring_cost(tiny, 3, 2, ["hamiltonian"])
    assert len(calls) == 1 + 1 + 2  # warm-up of each invert stage, then the 2 measuring rounds


def test_overhead_ablation_reaches_the_backward() -> None:
    """The "no backward probe" row swaps out what the invert backward really calls (the
    row once patched a class the backward had stopped using, and measured only noise)."""
    import odedsl.runtime.invert as invert_module
    from benchmarks import overhead

    made: list[object] = []

    class Counting(overhead._NoProbe):
        def __init__(self) -> None:
            made.append(self)

    tiny = overhead.Residual(width=4, hidden=4, batch=2)
    base = modes.build_stage("euler", 3, tiny, weights="untied", gamma=0.9, seed=0)
    stage = modes.with_mode(base, "invert", 1)
    x = tiny.input(dtype=torch.float32, device="cpu", seed=0).requires_grad_()
    overhead._patched(invert_module, "FiniteProbe", Counting, overhead._stepper(stage, x))()
    assert len(made) == 1


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib")
def test_plots_are_drawn(
    modes_run: dict[str, Any], peers_run: dict[str, Any], tmp_path: Path
) -> None:
    assert modes.plot(modes_run, tmp_path / "modes.png")
    assert peers.plot(peers_run, tmp_path / "peers.png")
    assert (tmp_path / "modes.png").stat().st_size > 10_000
    assert (tmp_path / "peers.png").stat().st_size > 10_000


def test_compile_quick_graph_count_is_independent_of_depth(tmp_path: Path) -> None:
    payload = compile_bench.main(["--quick", "--out", str(tmp_path)], log=_quiet)
    assert set(payload["summary"]) == set(compile_bench.MODES)
    for mode, s in payload["summary"].items():
        assert s["graphs_equal"], (mode, payload["table"])
    for row in payload["rows"]:
        assert row["cold"]["recompiled_after_first_step"] == 0, row
    assert (tmp_path / next(p.name for p in tmp_path.glob("compile-*.json"))).exists()


def test_partial_rows_are_written_after_each_depth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A run stopped by its time limit (a short GPU lease) keeps the depths it finished; a run
    that completes leaves only its whole JSON."""
    from benchmarks import common

    seen: list[int] = []
    real = common.write_partial

    def spy(out: Path, name: str, argv: Any, rows: list[Any]) -> Path:
        path = real(out, name, argv, rows)
        seen.append(len(json.loads(path.read_text())["rows"]))
        return path

    monkeypatch.setattr(modes, "write_partial", spy)
    modes.main(
        ["--quick", "--integrators", "euler", "--out", str(tmp_path), "--no-plot"], log=_quiet
    )
    assert len(seen) == 2 and 0 < seen[0] < seen[1]
    assert not list(tmp_path.glob("*.partial.json")) and list(tmp_path.glob("modes-*.json"))


def test_dropout_order_keeps_heuns_order_with_one_mask_per_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import dropout_order

    record = dropout_order.main(
        ["--integrators", "heun", "--depths", "16", "--seeds", "1", "--out", str(tmp_path)]
    )
    (row,) = record["rows"]
    assert row["per layer"] < 3 * row["none"] < row["per call"]  # the order kept, and lost
    assert json.loads(next(tmp_path.glob("dropout-order-*.json")).read_text())["rows"] == [row]
    assert "| heun | 16 |" in capsys.readouterr().out
    from odedsl.runtime import calls

    assert calls.random_stream.__module__ == "odedsl.runtime.calls"  # the patch is undone
