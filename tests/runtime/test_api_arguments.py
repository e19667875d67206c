"""The runtime's Python API refuses bad arguments at its boundary: backward modes accept
``'store'``, ``'invert'``, ``'checkpoint(k)'`` with ASCII digits and ``('checkpoint', k)`` with a
real int; ``expand_state_dict`` keeps to the depth limit of ``set_depth`` before allocating."""

from __future__ import annotations

import re

import pytest
import torch

from odedsl.runtime import Checkpoint, Store, WeightSchedule, expand_state_dict, parse_backward
from odedsl.runtime.invert import Invert
from odedsl.runtime.stage import max_depth
from odedsl.runtime.weights import depth_limit

from .util import make_stage

FORMS = r"'store', 'invert', 'checkpoint\(k\)' or \('checkpoint', k\)"


# ------------------------------------------------------------------ backward modes
@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("store", Store()),
        ("invert", Invert()),
        ("checkpoint(3)", Checkpoint(3)),
        (" checkpoint( 12 ) ", Checkpoint(12)),
        ("checkpoint", Checkpoint(1)),  # as the spec's `backward checkpoint` and compile read it
        (("checkpoint", 2), Checkpoint(2)),
        (Checkpoint(5), Checkpoint(5)),
    ],
)
def test_valid_backward_modes_keep_working(spec: object, want: object) -> None:
    got = parse_backward(spec)  # type: ignore[arg-type]
    assert type(got) is type(want) and str(got) == str(want)


@pytest.mark.parametrize(
    "spec", [("checkpoint", True), ("checkpoint", False), ("checkpoint", 2.0), ("checkpoint", "3")]
)
def test_checkpoint_k_must_be_a_real_int(spec: tuple) -> None:
    with pytest.raises(TypeError, match=rf"checkpoint\(k\) needs an integer k .*got {spec[1]!r}"):
        parse_backward(spec)
    with pytest.raises(TypeError, match="an integer k"):
        Checkpoint(spec[1])


@pytest.mark.parametrize(
    "text",
    [
        "checkpoint(٣)",  # Arabic-Indic three: int() reads it as 3
        "checkpoint(３)",  # fullwidth three
        "checkpoint(²)",  # isdigit() but int() fails
        "checkpoint(" + "9" * 5000 + ")",  # past int()'s digit limit
        "checkpoint(1.5)",
        "checkpoint()",
        "sideways",
    ],
)
def test_unknown_mode_strings_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown backward mode .*expected {FORMS}"):
        parse_backward(text)


@pytest.mark.parametrize("spec", [3, None, ["checkpoint", 2], ("checkpoint", 2, 3), Store])
def test_a_mode_of_the_wrong_type_names_the_accepted_forms(spec: object) -> None:
    with pytest.raises(TypeError, match=rf"backward mode must be .*{FORMS}"):
        parse_backward(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["checkpoint(0)", "checkpoint(-1)", ("checkpoint", 0)])
def test_checkpoint_k_below_1_is_a_value_error_in_compiles_words(spec: object) -> None:
    """As ``odedsl.compile`` says it (E205): ``checkpoint(-1)`` was an unknown mode here."""
    want = rf"^backward {re.escape(repr(spec))}: the segment length k of checkpoint\(k\) must"
    with pytest.raises(ValueError, match=want + r" be a positive integer, got -?[01]$"):
        parse_backward(spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k >= 1"):
        Checkpoint(-2)


# ------------------------------------------------------------------ expand_state_dict
def _tied() -> tuple[dict[str, torch.Tensor], WeightSchedule]:
    stage = make_stage("euler", 4, schedule=WeightSchedule("tied"))
    return stage.state_dict(), stage.schedule


@pytest.mark.parametrize("depth", [100_001, 10**9, 10**30])
def test_expand_keeps_to_the_depth_limit(depth: int) -> None:
    sd, tied = _tied()
    with pytest.raises(ValueError, match=rf"depth {depth} exceeds the limit of 100000"):
        expand_state_dict(sd, "", ["f"], (tied, 4), (WeightSchedule("untied"), depth))
    with pytest.raises(ValueError, match="ODEDSL_MAX_DEPTH"):
        expand_state_dict(sd, "", ["f"], (tied, depth), (WeightSchedule("untied"), 4))


def test_expand_reads_the_limit_of_set_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    sd, tied = _tied()
    untied = WeightSchedule("untied")
    assert max_depth is depth_limit  # one implementation
    for raw, limit in (("", 100_000), ("50", 50), (" 7 ", 7), ("lots", 100_000)):
        monkeypatch.setenv("ODEDSL_MAX_DEPTH", raw)
        assert depth_limit() == limit
    # str.isdigit accepts the first two (int("²") raised); int() of over 4300 digits raises
    for raw in ("²", "٣", "0", "9" * 5000):
        monkeypatch.setenv("ODEDSL_MAX_DEPTH", raw)
        assert depth_limit() == 100_000, raw
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "50")
    assert len([k for k in expand_state_dict(sd, "", ["f"], (tied, 4), (untied, 50))]) > 0
    with pytest.raises(ValueError, match="depth 51 exceeds the limit of 50"):
        expand_state_dict(sd, "", ["f"], (tied, 4), (untied, 51))


@pytest.mark.parametrize(
    ("depth", "error"),
    [(0, ValueError), (-3, ValueError), (True, TypeError), (8.0, TypeError), ("8", TypeError)],
)
def test_expand_refuses_depths_that_are_no_positive_int(depth: object, error: type) -> None:
    sd, tied = _tied()
    with pytest.raises(error, match=rf"depth must be a positive integer, got {depth!r}"):
        expand_state_dict(sd, "", ["f"], (tied, 4), (WeightSchedule("untied"), depth))  # type: ignore[arg-type]
    with pytest.raises(error, match=rf"depth must be a positive integer, got {depth!r}"):
        expand_state_dict(sd, "", ["f"], (tied, depth), (tied, 4))  # type: ignore[arg-type]


@pytest.mark.parametrize("pair", [("tied", 4), (WeightSchedule("tied"),), None])
def test_expand_refuses_a_schedule_pair_of_the_wrong_shape(pair: object) -> None:
    sd, tied = _tied()
    with pytest.raises(TypeError, match=r"dst must be a \(WeightSchedule, depth\) pair"):
        expand_state_dict(sd, "", ["f"], (tied, 4), pair)  # type: ignore[arg-type]


def test_a_schedule_k_must_be_a_real_int() -> None:
    with pytest.raises(TypeError, match="needs an integer k"):
        WeightSchedule("shared", True)
    with pytest.raises(TypeError, match="needs an integer k"):
        WeightSchedule("interpolated", 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an integer k >= 2"):
        WeightSchedule("interpolated", 1)
    with pytest.raises(ValueError, match="needs an integer k >= 1: None"):
        WeightSchedule("shared")
    sd, tied = _tied()
    with pytest.raises(ValueError, match="exceeds the limit of 100000"):
        expand_state_dict(sd, "", ["f"], (tied, 4), (WeightSchedule("interpolated", 10**9), 4))
