"""`odedsl gradcheck` and `odedsl plot`: JSON shape and values, the PNG, bad input → exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from odedsl.cli.gradcheck_cmd import parse_int_list
from odedsl.cli.main import main
from odedsl.cli.progress import sweep_bar
from odedsl.diagnostics import DslError

SPECS = Path(__file__).resolve().parents[2] / "specs"
TINY = ["--set", "depth=3", "--set", "width=4", "--set", "size=8"]
KEYS = {
    "stage",
    "integrator",
    "backward",
    "inverse",
    "depth",
    "grad_error",
    "grad_norm",
    "parameters",
    "reconstruction_error",
    "anchors",
}


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["gradcheck", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_gradcheck_json_shape_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    resnet = str(SPECS / "resnet.ode")
    store = _json(capsys, resnet, *TINY)  # resnet.ode declares backward store
    assert [r["stage"] for r in store] == ["body", "all"]
    assert all(set(r) == KEYS for r in store)
    assert all(r["grad_error"] == 0.0 for r in store)
    euler = _json(capsys, resnet, *TINY, "--backward", "invert", "--depth-list", "2,4")
    body = [r for r in euler if r["stage"] == "body"]
    assert [r["depth"] for r in body] == [2, 4]
    assert all(r["grad_error"] > 0 and r["reconstruction_error"] > 0 for r in body)
    assert body[0]["inverse"] == "approximate" and body[0]["backward"] == "invert"
    exact = _json(capsys, str(SPECS / "hamiltonian.ode"), "--set", "depth=2", "--set", "size=8")
    assert len(exact) == 4 and all(r["grad_error"] < 1e-12 for r in exact)
    assert all(r["reconstruction_error"] < 1e-12 for r in exact if r["stage"] != "all")


def test_gradcheck_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gradcheck", str(SPECS / "heunnet.ode"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "heun" in out and "invert" in out and "reconstruction" in out


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fig.png"
    args = ["plot", str(SPECS / "resnet.ode"), "--set", "width=4", "--set", "size=8"]
    assert main([*args, "--depths", "2,4,8", "--integrators", "euler,heun", "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    captured = capsys.readouterr()
    assert "euler · body: slope" in captured.out and "heun · body: slope" in captured.out
    bar = [line for line in captured.err.splitlines() if line.startswith("gradient checks")]
    assert len(bar) == 1 and " 6/6 done " in bar[0], captured.err  # 2 integrators × 3 depths
    assert main([*args, "--depths", "2,4", "-o", str(out), "--quiet"]) == 0
    assert "gradient checks" not in capsys.readouterr().err
    assert main([*args, "--depths", "2,4", "-o", str(out), "--integrators", "heun,heun"]) == 2
    assert "--integrators 'heun,heun': heun given twice" in capsys.readouterr().err


def test_gradcheck_shows_progress_over_a_depth_list(capsys: pytest.CaptureFixture[str]) -> None:
    """A bar on stderr for a sweep (stdout keeps the JSON), none for one check or --quiet."""
    resnet = str(SPECS / "resnet.ode")
    assert main(["gradcheck", resnet, *TINY, "--depth-list", "2,4", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 4 and " 2/2 done " in captured.err
    assert main(["gradcheck", resnet, *TINY, "--json"]) == 0
    assert "gradient checks" not in capsys.readouterr().err
    assert main(["gradcheck", resnet, *TINY, "--depth-list", "2,4", "--quiet"]) == 0
    assert "gradient checks" not in capsys.readouterr().err


def test_the_sweep_bar_yields_every_point_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    points = [("euler", 4), ("euler", 64), ("heun", 4), (None, None)]
    for enabled in (True, False):
        assert list(sweep_bar(points, enabled=enabled)) == points
    assert "4/4 done" in capsys.readouterr().err
    walked = []
    for point in sweep_bar(points, enabled=True):  # a failing check stops the bar cleanly
        walked.append(point)
        if len(walked) == 2:
            break
    assert walked == points[:2] and "1/4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plot", "SPEC", "--depths", "4,x"], "comma-separated list of positive integers"),
        (["plot", "SPEC", "--depths", "0,4"], "comma-separated list of positive integers"),
        (["plot", "SPEC", "--depths", "4,8", "-o", "fig.txt"], ".png, .pdf or .svg"),
        (["plot", "SPEC", "--depths", "2", "--integrators", "rk9"], "rk9"),
        (["plot", "missing.ode"], "cannot read"),
        (["gradcheck", "SPEC", "--depth-list", "4,,8"], "positive integers"),
        (["gradcheck", "SPEC", "--set", "depth=x"], "depth"),
        (["gradcheck", "SPEC", "--backward", "sideways"], "unknown backward mode"),
        (["gradcheck", "SPEC", "--depth-list", "2,3,...,1000000000000"], "more than 64 depths"),
        (["plot", "SPEC", "--depths", "1,2,...,1073741824"], "depth 131072 exceeds the limit"),
        (["gradcheck", "SPEC", "--seed", str(2**64)], "--seed: 18446744073709551616 is not"),
        (["plot", "SPEC", "--batch", "0"], "--batch: 0 is not between 1 and"),
    ],
)
def test_bad_input_exits_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(SPECS / "resnet.ode") if a == "SPEC" else a for a in args]
    args = [str(tmp_path / a) if a.startswith("fig.") else a for a in args]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_depth_lists() -> None:
    assert parse_int_list("4,8,...,64", "--depths") == [4, 8, 16, 32, 64]
    assert parse_int_list("3,5,...,9", "--depths") == [3, 5, 7, 9]
    assert parse_int_list("16", "--depths") == [16]
    assert len(parse_int_list("1,2,3,...,64", "--depths")) == 64
    assert parse_int_list("1,2,...,65536", "--depths")[-1] == 65536  # geometric: 17 values
    bad_lists = ("", "...", "4,...,8", "4,8,...", "-1,2", "a", "1,2,3,...,65", "2,4,...,10")
    for bad in (*bad_lists, ",".join("7" * 65)):
        with pytest.raises(DslError):
            parse_int_list(bad, "--depths")


@pytest.mark.parametrize("command", ["gradcheck", "plot"])
def test_seed_bound_is_trains(command: str) -> None:
    """``--seed`` of gradcheck and plot reads train's bound (``INT_BOUNDS``), not a copy."""
    from odedsl.cli.main import build_parser
    from odedsl.training.config import INT_BOUNDS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    actions = {a.dest: a for a in sub.choices[command]._actions}  # type: ignore[attr-defined]
    assert actions["seed"].type.bounds == INT_BOUNDS["seed"]  # type: ignore[union-attr]


def test_gradcheck_does_not_warn_that_the_gradients_it_measures_are_approximate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review 2026-12-03: since ApproximateGradientWarning, `odedsl gradcheck` of an Euler or
    Heun stage in invert prints a raw Python warning on stderr, located in
    odedsl/runtime/stage.py, telling the user to 'measure it with `odedsl gradcheck SPEC`'
    (`odedsl train --backward invert` prints it too, in the middle of its output)."""
    import warnings

    from odedsl.runtime import ApproximateGradientWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _json(capsys, str(SPECS / "heunnet.ode"), *TINY, "--quiet")
    assert not [w for w in caught if issubclass(w.category, ApproximateGradientWarning)]
