"""Front-end bugs found by fuzzing and probing, one test each (each failed before its fix)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

import odedsl
from odedsl import DslError, Limits, load_spec, parse
from odedsl.diagnostics import MAX_RENDERED, Diagnostic, SourceFile, Span

from .harness import check_error, raised

NET = """\
network net(depth: int = 2) {
    input vector[4]
    stage s = ode(depth) {
        residual { RESIDUAL }
    }
}
"""


def diagnostics(text: str, **kw: object) -> list[Diagnostic]:
    with pytest.raises(DslError) as err:
        load_spec(text, **kw)
    check_error(err.value, {"<spec>": text})
    return err.value.diagnostics


def test_number_literal_over_4300_digits_is_a_located_error() -> None:
    """int() refuses > 4300 digits; the parser let a ValueError (in a VisitError) escape."""
    text = NET.replace("depth: int = 2", "depth: int = " + "9" * 5000)
    (d,) = diagnostics(text)
    assert (d.code, d.span.line, d.span.column) == ("E205", 1, 26)
    assert "5,000 characters" in d.message


def test_long_integer_parameter_is_range_checked_not_overflowing() -> None:
    """A 300-digit int literal made math.isfinite raise OverflowError."""
    (d,) = diagnostics(NET.replace("= 2", "= " + "9" * 300))
    assert (d.code, d.span.line, d.span.column) == ("E205", 1, 26)


def test_float_literal_bounded_like_computed_values() -> None:
    """`1e300` passed as a depth and printed a 300-digit number; `1e150 * 1e150` did not."""
    (d,) = diagnostics(NET.replace("= 2", "= 1e300"))
    assert (d.code, d.span.line, d.span.column, d.message) == ("E205", 1, 26, "number too large")


@pytest.mark.parametrize("sep", ["\r", "\x0c"])
def test_lines_are_split_at_newline_only(sep: str) -> None:
    """The lexer counts lines by \\n; str.splitlines also splits at \\r and \\f (which the
    lexer skips as blanks), so the excerpt under a diagnostic showed another line."""
    text = f"network n() {{{sep} input vector[4]\n stage s = ode(2) {{ residual {{ foo }} }} }}\n"
    (d,) = diagnostics(text)
    assert (d.code, d.span.line) == ("E201", 2)
    assert d.span.source.line_text(2).startswith(" stage s = ode(2)")
    assert "foo" in d.render().splitlines()[1]


@pytest.mark.parametrize("sep", ["\x0b", "\u2028", "\x1c", "\x85"])
def test_other_line_separators_are_bad_characters_on_their_line(sep: str) -> None:
    text = f"network n() {{{sep} input vector[4]\n}}\n"
    (d,) = diagnostics(text)
    assert (d.code, d.span.line, d.span.column) == ("E100", 1, 14)
    excerpt = d.render().split("\n")[1]
    assert excerpt.endswith("network n() {" + sep + " input vector[4]")


def test_end_of_file_located_on_a_real_line() -> None:
    text = "network n() {\r input vector[4]\x0c\n stage s = ode(2) {"
    err = raised(parse, text, "t.ode")
    check_error(err, {"t.ode": text})
    (d,) = err.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("E100", 2, len(" stage s = ode(2) {") + 1)


def test_windows_line_endings_render_without_carriage_return() -> None:
    text = NET.replace("RESIDUAL", "foo").replace("\n", "\r\n")
    (d,) = diagnostics(text)
    assert (d.span.line, d.span.column) == (4, 20)
    assert "\r" not in d.render()


def test_many_diagnostics_render_in_linear_time_and_capped() -> None:
    """Every excerpt re-split the whole text (quadratic: 150k errors took minutes), and the
    message held every excerpt."""
    n = 20_000
    text = NET.replace("RESIDUAL", "linear(4" + ", 1" * n + ")")
    gc.collect()  # no collection of earlier tests' garbage inside the timing
    start = time.thread_time()
    err = raised(load_spec, text, limits=Limits(max_tokens=100_000))  # 40,000 tokens
    assert len(err.diagnostics) == n
    message = str(err)
    assert time.thread_time() - start < 5.0
    assert message.count("[E202]") == MAX_RENDERED
    assert f"{n - MAX_RENDERED} more not shown" in message and f"{n} errors" in message


def test_source_lines_are_split_once() -> None:
    src = SourceFile("a.ode", "x\ny\n")
    assert src.lines is src.lines and src.line_text(2) == "y" and src.line_text(9) == ""


def test_an_error_inside_a_block_called_many_times_is_reported_once() -> None:
    blocks = "block a() { b b b b } block b() { c c c c } block c() { foo }\n"
    ds = diagnostics(NET.replace("RESIDUAL", "a") + blocks)
    assert [(d.code, d.span.line, d.span.column) for d in ds] == [("E201", 7, 57)]


def _doubling(n: int, leaf: str) -> str:
    text = "".join(f"block b{i}() {{ b{i + 1} b{i + 1} }}\n" for i in range(n))
    return text + f"block b{n}() {{ {leaf} }}\n"


@pytest.mark.parametrize("leaf", ["foo", "linear(1, 2, 3)", "", "relu"])
def test_exponential_expansion_stops_whatever_the_leaves(leaf: str) -> None:
    """Only *valid* layers were counted: a block body that is an error (or empty), called
    2³⁰ times, never reached the limit and hung."""
    text = NET.replace("RESIDUAL", "b0") + _doubling(30, leaf)
    gc.collect()  # no collection of earlier tests' garbage inside the timing
    start = time.thread_time()
    ds = diagnostics(text)
    assert time.thread_time() - start < 1.0
    limit = [d for d in ds if d.code == "E250"]
    assert [(d.span.line, d.span.column) for d in limit] == [(4, 18)]
    assert "more than 10,000 layers after expanding blocks" in limit[0].message


def test_total_expansion_of_a_network_is_bounded() -> None:
    """50 stages each just under the per-sequence bound took 12 s to check (400k layers)."""
    stages = "".join(f" stage s{i} = ode(2) {{ residual {{ b0 }} }}\n" for i in range(50))
    text = f"network n() {{\n input vector[4]\n{stages}}}\n" + _doubling(11, "relu")
    gc.collect()  # no collection of earlier tests' garbage inside the timing
    start = time.thread_time()
    ds = diagnostics(text)
    assert time.thread_time() - start < 1.5
    # each stage: 2¹¹ layers + 2¹² - 1 calls = 6,143 statements; the 17th passes 100,000
    assert [(d.code, d.span.line, d.span.column) for d in ds] == [("E250", 19, 32)]
    assert "more than 100,000 layers in all" in ds[0].message
    small = f"network n() {{\n input vector[4]\n{stages}}}\n" + _doubling(6, "relu")
    limits = Limits(max_total_layers=50 * 191)  # 2⁶ layers + 2⁷ - 1 calls per stage
    assert len(load_spec(small, limits=limits).network.stages) == 50
    assert "in all" in diagnostics(small, limits=Limits(max_total_layers=50 * 191 - 1))[0].message


def test_total_expansion_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    stages = "".join(f" stage s{i} = ode(2) {{ residual {{ relu relu }} }}\n" for i in range(3))
    text = f"network n() {{\n input vector[4]\n{stages}}}\n"
    monkeypatch.setenv("ODEDSL_MAX_TOTAL_LAYERS", "5")
    (d,) = diagnostics(text)
    assert (d.code, d.span.line, d.span.column) == ("E250", 5, 31)


def test_nul_byte_in_a_path_is_a_file_error() -> None:
    """Path.stat raised ValueError, which escaped load_spec."""
    (d,) = raised(load_spec, "spec\x00.ode").diagnostics
    assert d.code == "E110" and d.span is None


def test_huge_file_error_is_located_at_the_start_of_the_file(tmp_path: Path) -> None:
    big = tmp_path / "big.ode"
    with big.open("wb") as f:
        f.truncate(2_000_000)  # sparse: nothing written, nothing read
    (d,) = raised(load_spec, big).diagnostics
    assert (d.code, d.span.file, d.span.line, d.span.column) == ("E101", str(big), 1, 1)


def test_diagnostic_codes_stay_registered() -> None:
    """Dedup keeps Diagnostics hashable: Span compares without its SourceFile."""
    a = Span(SourceFile("a", "x"), 1, 1, 1, 2)
    b = Span(SourceFile("a", "x"), 1, 1, 1, 2)
    assert hash(Diagnostic("E100", "m", a)) == hash(Diagnostic("E100", "m", b))
    assert odedsl.Limits().max_total_layers == 100_000


def test_a_broken_integrator_is_not_also_unknown() -> None:
    """The stage using an integrator whose declaration has errors also reported
    "unknown integrator" (E200), pointing away from the real problem."""
    text = NET.replace("residual {", "integrator my residual {").replace("RESIDUAL", "relu")
    ds = diagnostics(text + "integrator my(x; a = 1/0) { x += a * h * f(x, t) }\n")
    assert [(d.code, d.span.line) for d in ds] == [("E240", 7)]  # the declaration's error only


def test_float_literal_overflowing_to_infinity_is_refused_where_written() -> None:
    """`1e999` reached the integrator algebra as inf, whose printer crashed (OverflowError)."""
    text = NET.replace("residual {", "integrator my residual {").replace("RESIDUAL", "relu")
    ds = diagnostics(text + "integrator my(x) { x += 1e999 * h * f(x, t) }\n")
    assert [(d.code, d.span.line, d.span.column) for d in ds] == [("E205", 7, 25)]
    assert "1e999" in ds[0].message


def test_long_integer_literal_in_an_integrator_is_not_a_float_overflow() -> None:
    """The 1e999 check called math.isfinite on a 300-digit int: OverflowError."""
    text = NET.replace("residual {", "integrator my residual {").replace("RESIDUAL", "relu")
    ds = diagnostics(text + "integrator my(x) { x += " + "9" * 300 + " * h * f(x, t) }\n")
    assert [(d.code, d.span.line) for d in ds] == [("E240", 7)]


def test_same_error_at_the_same_place_of_two_files_is_two_errors(tmp_path: Path) -> None:
    """Deduplication must not merge files: spans compare by position only."""
    (tmp_path / "a.ode").write_text("block a() { foo }\n")
    (tmp_path / "b.ode").write_text("block b() { foo }\n")
    main = 'import "a.ode"\nimport "b.ode"\n' + NET.replace("RESIDUAL", "a b")
    (tmp_path / "main.ode").write_text(main)
    err = raised(load_spec, tmp_path / "main.ode")
    found = sorted(
        (d.code, Path(d.span.file).name, d.span.line, d.span.column) for d in err.diagnostics
    )
    assert found == [("E201", "a.ode", 1, 13), ("E201", "b.ode", 1, 13)]


@pytest.mark.parametrize("bom", ["\ufeff", "\ufeff\ufeff"])
def test_a_byte_order_mark_keeps_the_file_text_and_its_positions(bom: str) -> None:
    """Found by the at-scale mutation fuzz (2026-12-02, 6 failures): a leading byte-order
    mark, once accepted, was stripped from the text the diagnostics quote, so every error in
    such a file pointed into a text that was not the file's. It is now lexed as a space."""
    broken = bom + NET.replace("RESIDUAL", "linear(4,,)")
    ds = diagnostics(broken)  # check_error: every span points into this very text
    if bom == "\ufeff":
        assert [(d.code, d.span.line, d.span.column) for d in ds] == [("E100", 4, 29)]
        assert load_spec(bom + NET.replace("RESIDUAL", "linear(4)")).network.name == "net"
    else:  # a second mark is a character out of place, at line 1, column 2
        assert [(d.code, d.span.line, d.span.column) for d in ds] == [("E100", 1, 2)]
