"""``odedsl.compile``'s dtype and ``odedsl.Limits``' fields: a value that cannot work is refused
where it is given, naming the argument and what is allowed."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

import odedsl
from odedsl import DslError, Limits
from odedsl.diagnostics import OVERRIDE_STYLE
from odedsl.limits import ZERO_ALLOWED

SPEC = """\
network small(depth: int = 2) {
    input image[2, 6, 6]
    stem { conv2d(4, kernel=3, padding=1) }
    stage body = ode(depth) { integrator euler residual { conv2d(4, kernel=3, padding=1) tanh } }
    head { flatten linear(3) }
}
"""

REAL = "torch.float16, torch.bfloat16, torch.float32 or torch.float64"


@pytest.mark.parametrize(
    "dtype", [torch.complex64, torch.complex128, torch.int64, torch.bool, torch.uint8]
)
def test_compile_refuses_a_dtype_that_is_not_real_floating(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=rf"dtype {dtype} .*expected {REAL}"):
        odedsl.compile(SPEC, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_compile_takes_every_real_floating_dtype(dtype: torch.dtype) -> None:
    model = odedsl.compile(SPEC, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}


@pytest.mark.parametrize("name", [f.name for f in fields(Limits)])
def test_limits_refuse_a_bound_below_what_the_field_allows(name: str) -> None:
    """Sizes are positive; a count of imports or of nested blocks may be 0 (none allowed)."""
    lowest = 0 if name in ZERO_ALLOWED else 1
    want = "an integer, 0 or more" if lowest == 0 else "a positive integer"
    assert getattr(Limits(**{name: lowest}), name) == lowest
    for value in {lowest - 1, -1, -(10**20)}:
        with pytest.raises(ValueError, match=rf"Limits\({name}={value}\): must be {want}"):
            Limits(**{name: value})


@pytest.mark.parametrize("value", [True, 2.5, 100.0, "100", None])
def test_limits_refuse_a_bound_that_is_not_an_int(value: object) -> None:
    with pytest.raises(TypeError, match=rf"Limits\(max_depth={value!r}\): must be a positive int"):
        Limits(max_depth=value)  # type: ignore[arg-type]


def test_limits_keep_their_defaults_and_large_values() -> None:
    assert Limits().max_depth == 100_000
    assert Limits(max_depth=10**12).max_depth == 10**12
    assert odedsl.compile(SPEC, limits=Limits(max_depth=2)).body.depth == 2


@pytest.mark.parametrize("raw", ["0", "-5", "٣", "3.0", "1e3", ""])
def test_a_limit_from_the_environment_that_is_no_positive_integer_is_a_dsl_error(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ODEDSL_MAX_WIDTH", raw)
    with pytest.raises(DslError, match=rf"ODEDSL_MAX_WIDTH={raw!r} is not a positive integer"):
        Limits.from_env()
    monkeypatch.setenv("ODEDSL_MAX_IMPORTS", "0")
    monkeypatch.setenv("ODEDSL_MAX_WIDTH", " 7 ")
    assert (Limits.from_env().max_imports, Limits.from_env().max_width) == (0, 7)
    monkeypatch.setenv("ODEDSL_MAX_IMPORTS", "-1")
    with pytest.raises(DslError, match=r"ODEDSL_MAX_IMPORTS='-1' is not an integer, 0 or more"):
        Limits.from_env()


@pytest.mark.parametrize("backward", ["checkpoint(٣)", "checkpoint(²)", "checkpoint(1.5)"])
def test_compile_refuses_a_checkpoint_k_that_is_not_ascii_digits(backward: str) -> None:
    with pytest.raises(DslError, match="unknown backward mode"):
        odedsl.compile(SPEC, backward=backward)
    assert str(odedsl.compile(SPEC, backward="checkpoint(2)").body.backward_mode) == "checkpoint(2)"


def test_a_misspelt_backward_override_suggests_the_mode() -> None:
    """`--backward invrt` said only "expected store, invert or checkpoint(k)", where the spec's
    `backward invrt` asks "did you mean 'invert'?"."""
    with pytest.raises(DslError) as err:
        odedsl.compile(SPEC, backward="invrt")
    (d,) = err.value.diagnostics
    assert d.hint is not None and d.hint.startswith("did you mean 'invert'?")
    with pytest.raises(DslError) as err:
        odedsl.compile(SPEC, backward="sideways")
    assert "expected 'store', 'invert', 'checkpoint(k)'" in err.value.diagnostics[0].message
    assert err.value.diagnostics[0].hint is None  # not the message's list again


def test_a_backward_override_on_the_command_line_names_the_forms_it_can_write() -> None:
    """`--backward sideways` was told of ``('checkpoint', k)``, a form only Python can pass."""
    style = OVERRIDE_STYLE.set("cli")
    try:
        with pytest.raises(DslError) as err:
            odedsl.compile(SPEC, backward="sideways")
    finally:
        OVERRIDE_STYLE.reset(style)
    message = err.value.diagnostics[0].message
    assert message.endswith("expected store, invert or checkpoint(k), k >= 1"), message


@pytest.mark.parametrize(
    ("backward", "column", "value"),
    [("checkpoint(0)", 12, "0"), (" checkpoint( -3 )", 14, "-3"), ("checkpoint(00)", 12, "00")],
)
def test_a_checkpoint_k_below_1_is_out_of_range_on_k(
    backward: str, column: int, value: str
) -> None:
    """`--backward checkpoint(0)` said "unknown backward mode": it is a k out of range, reported
    as the spec's own clause reports it, with a caret on k and a hint."""
    with pytest.raises(DslError) as err:
        odedsl.compile(SPEC, backward=backward)
    (d,) = err.value.diagnostics
    assert d.code == "E205" and "segment length k" in d.message and "positive integer" in d.message
    assert d.span is not None and (d.span.line, d.span.column) == (1, column)
    assert d.hint is not None and "e.g. checkpoint(4)" in d.hint
    caret = d.render().splitlines()[2]
    assert caret.index("^") - caret.index("|") - 2 == column - 1 and caret.count("^") == len(value)
