"""The argparse types of ``odedsl.cli.common`` that the example and benchmark scripts share:
a bad value is a usage error naming what is allowed, never a traceback later."""

from __future__ import annotations

import argparse
import math

import pytest

from odedsl.cli.common import depth_in, int_in, real_in


def _refuses(parse: object, text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        parse(text)  # type: ignore[operator]
    return str(err.value)


def test_real_in_takes_finite_ascii_numbers_in_the_range() -> None:
    positive = real_in(0.0, math.inf, low_open=True)
    for text, value in (("0.01", 0.01), ("1e-3", 1e-3), (".5", 0.5), ("2", 2.0), (" 3 ", 3.0)):
        assert positive(text) == value
    assert positive.bounds == (0.0, math.inf)  # type: ignore[attr-defined]
    for bad in ("0", "-1", "nan", "inf", "-inf", "1e-400", "1e400"):
        assert _refuses(positive, bad) == f"{bad} is not a finite number > 0"
    for bad in ("abc", "١.٥", "1_0", "0x10", "", "1e"):
        assert _refuses(positive, bad) == f"expected a finite number > 0, got {bad!r}"


def test_real_in_ends_open_or_closed() -> None:
    closed = real_in(0.0, 1.0)
    assert closed("0") == 0.0 and closed("1") == 1.0
    assert _refuses(closed, "1.5") == "1.5 is not a finite number >= 0 and <= 1"
    half_open = real_in(0.0, 1.0, low_open=True, high_open=True)
    for bad in ("0", "1"):
        assert _refuses(half_open, bad) == f"{bad} is not a finite number > 0 and < 1"
    assert half_open("0.5") == 0.5
    below = real_in(-math.inf, 1e6)
    assert below("-1e300") == -1e300
    assert _refuses(below, "1e7") == "1e7 is not a finite number <= 1000000"
    assert "<= 0.25" in _refuses(real_in(0.0, 0.25), "1")


def test_real_in_names_the_option_through_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--lr", type=real_in(0.0, math.inf, low_open=True))
    assert p.parse_args(["--lr=1e-2"]).lr == 0.01
    for bad in ("-1", "nan", "abc"):
        with pytest.raises(SystemExit) as exit_:
            p.parse_args([f"--lr={bad}"])
        assert exit_.value.code == 2
        assert "argument --lr: " in capsys.readouterr().err


def test_depth_in_reads_the_runtime_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "50")
    depth = depth_in()
    assert depth("1") == 1 and depth("50") == 50
    assert depth.bounds == (1, 50)  # type: ignore[attr-defined]
    assert _refuses(depth, "51") == (
        "51 is not between 1 and 50 (the depth limit: raise it with ODEDSL_MAX_DEPTH)"
    )
    assert _refuses(depth, "0") == "0 is not between 1 and 50"
    assert _refuses(depth, "2.5") == "expected an integer between 1 and 50, got '2.5'"
    assert depth_in(0)("0") == 0
    monkeypatch.delenv("ODEDSL_MAX_DEPTH")
    assert depth_in().bounds == (1, 100_000)  # type: ignore[attr-defined]


def test_int_in_refuses_what_int_would_read() -> None:
    count = int_in(1, 10)
    assert count("3") == 3
    for bad in ("٣", "1_0", "1e1", "nan"):
        assert _refuses(count, bad) == f"expected an integer between 1 and 10, got {bad!r}"
