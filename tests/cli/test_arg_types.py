"""The argparse types of ``odedsl.cli.common`` that the example and benchmark scripts share:
a bad value is a usage error naming what is allowed, never a traceback later."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from odedsl.cli.argtypes import depth_in, int_in, out_folder, real_in, torch_device


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


def test_torch_device_takes_what_torch_can_use_here(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("auto") == "cpu"
    assert "use --device cpu" in _refuses(torch_device, "cuda")
    assert "only cpu and cuda" in _refuses(torch_device, "meta")
    assert "unknown device" in _refuses(torch_device, "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [torch_device(d) for d in ("cuda", "cuda:1", "auto")] == ["cuda", "cuda:1", "cuda"]
    refused = "'cuda:2': torch sees 2 CUDA devices; use cuda:0 to cuda:1"
    assert _refuses(torch_device, "cuda:2") == refused


def test_out_folder_is_a_folder_that_can_be_made(tmp_path: Path) -> None:
    assert out_folder(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # made by the script, not by parsing
    (tmp_path / "f").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert "is a file" in _refuses(out_folder, str(tmp_path / "f"))
    assert "no folder can be made" in _refuses(out_folder, str(tmp_path / "f" / "x"))
    assert "broken link" in _refuses(out_folder, str(tmp_path / "link"))
    assert "expected a folder" in _refuses(out_folder, "")
    assert "longer than" in _refuses(out_folder, str(tmp_path / "a" / ("x" * 300) / "b"))
