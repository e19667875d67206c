"""Seed 000 Prop. 2, CI-sized: zero-initialised linear ResNets trained by the rescaled
gradient flow keep N·max‖A_{n+1} − A_n‖ bounded in N; independent random initial weights (the
negative control, outside the proposition's hypothesis) make it grow like N."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import linear_resnet_smoothness as L

SCRIPT = Path(L.__file__)


def test_smoothness_bounded_in_depth(tmp_path):
    rec = L.main(["--quick", "--no-plot", "--out", str(tmp_path)])
    runs = rec["runs"]
    assert [r["depth"] for r in runs] == [5, 10, 20, 40]
    for r in runs:
        assert r["final_loss"] < 0.05 * r["initial_loss"], r  # it trained
        assert r["max_smoothness"] > 0.05, r  # the weights moved apart (not trivially 0)
    assert rec["smoothness_ratio"] < 1.3, rec["smoothness_ratio"]
    # Th. 1: the weight functions converge as N grows (distance to the deepest one shrinks)
    dist = [d["distance"] for d in rec["distance_to_deepest"] if d["distance"] is not None]
    assert all(a > b for a, b in itertools.pairwise(dist)), dist
    assert dist[-1] < 0.35 * dist[0], dist


def test_negative_control_random_init_grows_with_depth(tmp_path):
    rec = L.main(["--quick", "--no-plot", "--init", "random", "--out", str(tmp_path)])
    smooth = [r["max_smoothness"] for r in rec["runs"]]
    assert all(a < b for a, b in itertools.pairwise(smooth)), smooth
    assert rec["smoothness_ratio"] > 4.0, rec["smoothness_ratio"]


def test_command_line_writes_json_and_png(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--depths",
            "4",
            "8",
            "--iterations",
            "20",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "N·max‖ΔA‖" in out
    assert (tmp_path / "linear_resnet_smoothness.json").stat().st_size > 0
    png = (tmp_path / "linear_resnet_smoothness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
