"""Resource limits: each a located error (code, line, column), raised fast and before anything
is allocated, and each overridable from ``odedsl.Limits(...)`` and ``ODEDSL_MAX_*``.

"Before allocation" is checked three ways: the error comes in < 1 s of CPU time, the Python
heap grows by less than a few MB (tracemalloc peak), and ``odedsl.compile`` fails without
ever reaching the graph builder (patched to fail the test if it is called).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

import odedsl
from odedsl import DslError, Limits, load_spec
from odedsl.diagnostics import Diagnostic

BASE = """\
network net(depth: int = 4, width: int = 8) {
    input image[3, 8, 8]
    stem { conv2d(width, kernel=3, padding=1) relu }
    stage body = ode(depth) {
        integrator euler
        residual { conv2d(width, kernel=3, padding=1) relu }
    }
    head { adaptive_avgpool2d(1) flatten linear(10) }
}
"""

VECTOR = """\
network net() {
    input vector[4]
    stage s = ode(2) {
        residual { RESIDUAL }
    }
}
"""


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Imports (torch) and the parser's construction are not part of any measurement."""
    load_spec(BASE)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for f in fields(Limits):
        monkeypatch.delenv(f"ODEDSL_{f.name.upper()}", raising=False)


def refused(
    fn: Callable[..., Any], *args: Any, heap_mb: float = 4, **kwargs: Any
) -> tuple[Diagnostic, ...]:
    """Run ``fn``; it must raise DslError in < 1 s CPU of this thread and < ``heap_mb`` of
    Python heap. Timed with the collector off after a collection: a full collection of what
    earlier tests left (torch modules, tensors) took 1.1 s inside a 0.09 s parse once, and
    process time counted torch's spinning OpenMP workers (1.29 s once)."""
    gc.collect()
    gc.disable()
    start = time.thread_time()
    try:
        fn(*args, **kwargs)
    except DslError as err:
        elapsed = time.thread_time() - start
        found = tuple(d for d in err.diagnostics if d.severity == "error")
    else:
        raise AssertionError("no DslError")
    finally:
        gc.enable()
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
    except DslError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < heap_mb * 2**20, f"peak Python heap {peak / 2**20:.1f} MB"
    return found


def where(ds: tuple[Diagnostic, ...]) -> list[tuple[str, int, int]]:
    return [(d.code, d.span.line, d.span.column) for d in ds]  # type: ignore[union-attr]


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """``odedsl.compile`` must fail before building any module."""

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the graph builder was reached")

    monkeypatch.setattr("odedsl.compiler.build_graph_module", boom)


# ------------------------------------------------------------------ depth and width
def test_depth_of_a_billion(no_build: None) -> None:
    ds = refused(load_spec, BASE, depth=10**9)
    assert where(ds) == [("E250", 4, 22)]
    assert "depth 1000000000 exceeds the limit of 100000" in ds[0].message
    assert where(refused(odedsl.compile, BASE, depth=10**9)) == [("E250", 4, 22)]
    text = BASE.replace("ode(depth)", "ode(10 ^ 9)")
    assert where(refused(odedsl.compile, text)) == [("E250", 4, 22)]


def test_depth_limit_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_spec(BASE, depth=10**6, limits=Limits(max_depth=10**6)).network.stages[0].depth
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "3")
    assert where(refused(load_spec, BASE)) == [("E250", 4, 22)]  # default depth 4 > 3
    assert load_spec(BASE, limits=Limits(max_depth=4)).network.stages[0].depth == 4


def test_width_of_a_billion(no_build: None) -> None:
    ds = refused(odedsl.compile, BASE, width=10**9)
    assert where(ds) == [("E250", 3, 19), ("E250", 6, 27)]
    assert all("out=1000000000 exceeds the limit of 65536" in d.message for d in ds)
    text = VECTOR.replace("vector[4]", "vector[1000000000]").replace("RESIDUAL", "relu")
    assert where(refused(load_spec, text)) == [("E250", 2, 18)]


def test_width_limit_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_spec(BASE, width=100, limits=Limits(max_width=100)).network.stages[0].shape[0]
    monkeypatch.setenv("ODEDSL_MAX_WIDTH", "7")
    expected = [("E250", 3, 19), ("E250", 6, 27), ("E250", 8, 49)]  # 8, 8 and linear(10)
    assert where(refused(load_spec, BASE)) == expected


def test_kernel_and_spatial_limits() -> None:
    stem = "stem { conv2d(width, kernel=3, padding=1) relu }"
    text = BASE.replace(stem, stem.replace("kernel=3, padding=1", "kernel=65, padding=32"))
    assert where(refused(load_spec, text)) == [("E250", 3, 33)]
    big = BASE.replace("image[3, 8, 8]", "image[3, 20000, 8]")
    assert where(refused(load_spec, big)) == [("E250", 2, 20)]
    assert load_spec(big, limits=Limits(max_spatial=20000)).network.input_shape == (3, 20000, 8)


# ------------------------------------------------------------------ parameters
def test_parameters_beyond_the_default_budget(no_build: None) -> None:
    """65,536 channels, 3×3: 38.7·10⁹ weights per convolution (150 GB): refused unbuilt."""
    ds = refused(odedsl.compile, BASE, width=65536)
    assert where(ds) == [("E250", 1, 1)]
    assert "over the budget of 2,000,000,000" in ds[0].message


def test_parameter_budget_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    total = load_spec(BASE).network.parameters
    assert total == (3 * 8 * 9 + 8) + 4 * (8 * 8 * 9 + 8) + (8 * 10 + 10)
    ds = refused(load_spec, BASE, limits=Limits(max_parameters=total - 1))
    assert where(ds) == [("E250", 1, 1)]
    assert f"network has {total:,} parameters, over the budget of {total - 1:,}" in ds[0].message
    assert load_spec(BASE, limits=Limits(max_parameters=total)).network.parameters == total
    monkeypatch.setenv("ODEDSL_MAX_PARAMETERS", str(total - 1))
    assert where(refused(load_spec, BASE)) == [("E250", 1, 1)]
    with pytest.raises(DslError):
        odedsl.compile(BASE)


# ------------------------------------------------------------------ blocks
def _doubling(n: int) -> str:
    text = "".join(f"block b{i}(c: int) {{ b{i + 1}(c) b{i + 1}(c) }}\n" for i in range(n))
    return text + f"block b{n}(c: int) {{ linear(c) relu }}\n"


def test_exponential_block_expansion(no_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """2³⁰ layers written in 31 lines: refused after 10,000 statements."""
    text = VECTOR.replace("RESIDUAL", "b0(4)") + _doubling(30)
    ds = refused(odedsl.compile, text, heap_mb=16)  # the 10,000 statements checked first
    assert where(ds) == [("E250", 4, 18)]
    assert "more than 10,000 layers after expanding blocks" in ds[0].message
    small = VECTOR.replace("RESIDUAL", "b0(4)") + _doubling(5)  # 64 layers, 127 statements
    assert len(load_spec(small).network.stages[0].residuals["f"].layers) == 64
    assert where(refused(load_spec, small, limits=Limits(max_block_expansion=126))) == [
        ("E250", 4, 18)
    ]
    assert load_spec(small, limits=Limits(max_block_expansion=127)).network  # the limit holds
    monkeypatch.setenv("ODEDSL_MAX_BLOCK_EXPANSION", "100")
    assert where(refused(load_spec, small)) == [("E250", 4, 18)]


def test_block_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = "".join(f"block c{i}() {{ c{i + 1} }}\n" for i in range(40)) + "block c40() { relu }\n"
    text = VECTOR.replace("RESIDUAL", "c0") + chain
    ds = refused(load_spec, text)
    assert where(ds) == [("E250", 38, 15)]  # c31's call of c32: the 33rd level
    assert "blocks nested deeper than 32" in ds[0].message
    assert load_spec(text, limits=Limits(max_block_nesting=41)).network.parameters == 0
    monkeypatch.setenv("ODEDSL_MAX_BLOCK_NESTING", "41")
    assert load_spec(text).network.parameters == 0


# ------------------------------------------------------------------ imports
def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


MAIN = 'import "FIRST"\n' + VECTOR.replace("RESIDUAL", "relu")


def test_import_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "main.ode": MAIN.replace("FIRST", "a.ode"),
            "a.ode": '# a\nimport "b.ode"\nblock x() { relu }\n',
            "b.ode": '\n\n  import "a.ode"\n',
        },
    )
    ds = refused(load_spec, tmp_path / "main.ode")
    assert [(d.code, d.span.file, d.span.line, d.span.column) for d in ds] == [
        ("E112", f"{tmp_path.name}/b.ode", 3, 3)
    ]
    assert "a.ode → b.ode → a.ode" in ds[0].message


def test_self_import(tmp_path: Path) -> None:
    _write(tmp_path, {"main.ode": MAIN.replace("FIRST", "main.ode")})
    ds = refused(load_spec, tmp_path / "main.ode")
    assert where(ds) == [("E112", 1, 1)]


def _chain(root: Path, n: int) -> Path:
    files = {"main.ode": MAIN.replace("FIRST", "f1.ode")}
    for i in range(1, n):
        files[f"f{i}.ode"] = f'import "f{i + 1}.ode"\n'
    files[f"f{n}.ode"] = "block leaf() { relu }\n"
    _write(root, files)
    return root / "main.ode"


def test_deep_import_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = _chain(tmp_path, 40)
    ds = refused(load_spec, main)
    assert [(d.code, d.span.file, d.span.line, d.span.column) for d in ds] == [
        ("E113", f"{tmp_path.name}/f15.ode", 1, 1)  # main, f1 … f15: 16 files deep
    ]
    assert "import chain deeper than 16 files" in ds[0].message
    assert load_spec(main, limits=Limits(max_import_depth=41)).network.name == "net"
    monkeypatch.setenv("ODEDSL_MAX_IMPORT_DEPTH", "3")
    ds = refused(load_spec, main)
    assert [(d.span.file, d.span.line) for d in ds] == [(f"{tmp_path.name}/f2.ode", 1)]


def test_too_many_imported_files(tmp_path: Path) -> None:
    files = {f"lib/m{i}.ode": f"block m{i}() {{ relu }}\n" for i in range(300)}
    imports = "".join(f'import "lib/m{i}.ode"\n' for i in range(300))
    files["main.ode"] = imports + VECTOR.replace("RESIDUAL", "m299")
    _write(tmp_path, files)
    gc.collect()  # no collection of earlier tests' garbage inside the timing
    start = time.thread_time()
    with pytest.raises(DslError) as err:
        load_spec(tmp_path / "main.ode")
    assert time.thread_time() - start < 2.0
    found = where(tuple(err.value.diagnostics))
    assert found[0] == ("E113", 256, 1) and {code for code, _, _ in found} == {"E113"}
    assert "more than 256 files imported" in err.value.diagnostics[0].message
    assert load_spec(tmp_path / "main.ode", limits=Limits(max_imports=301)).network


# ------------------------------------------------------------------ size of the spec
def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)  # no data written, and none will be read
    return path


def test_spec_file_of_100_mb(tmp_path: Path) -> None:
    big = _sparse(tmp_path / "big.ode", 100 * 2**20)
    ds = refused(load_spec, big)
    assert [(d.code, d.span.file, d.span.line, d.span.column) for d in ds] == [
        ("E101", str(big), 1, 1)
    ]
    assert "104,857,600 bytes, over the limit of 1,000,000" in ds[0].message


def test_imported_file_of_100_mb(tmp_path: Path) -> None:
    _sparse(tmp_path / "big.ode", 100 * 2**20)
    (tmp_path / "main.ode").write_text("\n" + MAIN.replace("FIRST", "big.ode"))
    ds = refused(load_spec, tmp_path / "main.ode")
    assert where(ds) == [("E101", 2, 1)]  # the import statement


def test_spec_text_of_100_mb() -> None:
    """Handed over as text: measured without encoding a copy (tracemalloc would see it)."""
    text = "network n() {}\n" + "#" * (100 * 2**20)
    ds = refused(load_spec, text)
    assert [(d.code, d.span.line, d.span.column) for d in ds] == [("E101", 1, 1)]


def test_spec_size_limit_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "base.ode"
    path.write_text(BASE)
    monkeypatch.setenv("ODEDSL_MAX_SPEC_BYTES", "100")
    assert [d.code for d in refused(load_spec, path)] == ["E101"]
    assert [d.code for d in refused(load_spec, BASE)] == ["E101"]
    assert load_spec(path, limits=Limits(max_spec_bytes=len(BASE))).network.name == "net"


# ------------------------------------------------------------------ tokens and brackets
MB_SPECS = {
    "a flat sum": VECTOR.replace("RESIDUAL", "linear(" + "+".join(["1"] * 499_950) + ")"),
    "200,000 layers": VECTOR.replace("RESIDUAL", "linear(4)" + " relu" * 199_980),
    "nested parentheses": VECTOR.replace(
        "RESIDUAL", "linear(" + "(" * 499_950 + "4" + ")" * 499_950 + ")"
    ),
    "a long name": VECTOR.replace("net()", "n" * 900_000 + "()"),
}


@pytest.mark.parametrize("name", list(MB_SPECS))
def test_a_megabyte_of_tokens_is_refused_before_the_parser(name: str) -> None:
    """Each of these 1 MB specs took 9 to 13 s of CPU in the parser (20–45 µs a token) and
    nested parentheses, which add no tree level, were accepted; the token scan refuses them
    in milliseconds, located."""
    text = MB_SPECS[name]
    assert len(text) < 1_000_000
    ds = refused(load_spec, text, heap_mb=16)
    (d,) = ds
    assert d.code == "E101" and d.span.line == (1 if name == "a long name" else 4)
    expected = {
        "a flat sum": "more than 10,000 tokens",
        "200,000 layers": "more than 10,000 tokens",
        "nested parentheses": "nesting deeper than 64 levels of brackets",
        "a long name": "a name of 900,000 characters",
    }[name]
    assert expected in d.message


def test_the_token_budget_is_shared_by_imports(tmp_path: Path) -> None:
    """Four imported files of 600 tokens each pass one by one under a budget of 2,000, not
    together: the parse time of a spec is bounded whatever it imports (256 files of 1 MB once
    took 40 minutes)."""
    relus = " relu" * 590
    files = {f"b{i}.ode": f"block b{i}() {{ {relus} }}\n" for i in range(4)}
    files["main.ode"] = "".join(f'import "b{i}.ode"\n' for i in range(4)) + VECTOR.replace(
        "RESIDUAL", "linear(4)"
    )
    _write(tmp_path, files)
    ds = refused(load_spec, tmp_path / "main.ode", limits=Limits(max_tokens=2_000), heap_mb=64)
    assert [(d.code, d.span.file) for d in ds] == [("E101", f"{tmp_path.name}/b3.ode")]
    assert "more than 2,000 tokens in this spec and its imports" in ds[0].message
    assert load_spec(tmp_path / "main.ode", limits=Limits(max_tokens=4_000)).network


def test_a_spec_just_under_the_budget_checks_in_about_a_second() -> None:
    """The slowest accepted kind measured: 9,950 layers in a row, 0.9 s here (parse, tree,
    validation); asserted with room for a slower machine."""
    text = VECTOR.replace("RESIDUAL", "linear(4)").replace(
        "    }\n}", "    }\n    head { linear(3)" + " relu" * 9_950 + " }\n}"
    )
    gc.collect()  # no collection of earlier tests' garbage inside the timing
    start = time.thread_time()
    assert load_spec(text).network
    assert time.thread_time() - start < 3.0


# ------------------------------------------------------------------ numbers and powers
def test_number_of_a_million_digits() -> None:
    text = BASE.replace("depth: int = 4", "depth: int = " + "7" * 10**6)
    assert [d.code for d in refused(load_spec, text)] == ["E101"]  # over 1 MB: not even lexed
    ds = refused(load_spec, text, limits=Limits(max_spec_bytes=2 * 10**6))
    assert where(ds) == [("E205", 1, 26)]
    assert "number literal of 1,000,000 characters is too large" in ds[0].message
    floats = BASE.replace("depth: int = 4", "depth: int = 0." + "7" * 10**6)
    assert where(refused(load_spec, floats, limits=Limits(max_spec_bytes=2 * 10**6))) == [
        ("E205", 1, 26)
    ]


@pytest.mark.parametrize(
    ("expr", "code"),
    [
        ("2^2^2^2^2", "E205"),  # 2^65536
        ("10^10^10", "E205"),
        ("2^" * 40 + "2", "E205"),
        ("2^" * 70 + "2", "E101"),  # nesting over 64
        ("(2^2^2^2)^(2^2^2^2)", "E205"),
        ("9^9^9^9^9^9^9^9^9^9^9^9", "E205"),
    ],
)
def test_tower_of_powers(expr: str, code: str) -> None:
    text = BASE.replace("depth: int = 4", f"depth: int = {expr}")
    ds = refused(load_spec, text)
    assert [d.code for d in ds] == [code]
    line, col = where(ds)[0][1:]
    assert line == 1 and 26 <= col <= 26 + len(expr)


def test_nesting_limit_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE.replace("depth: int = 4", "depth: int = " + "-" * 100 + "4")
    ((code, line, col),) = where(refused(load_spec, text))
    assert (code, line) == ("E101", 1) and 26 <= col < 126
    assert load_spec(text, limits=Limits(max_nesting=200)).network.stages[0].depth == 4
    monkeypatch.setenv("ODEDSL_MAX_NESTING", "200")
    assert load_spec(text).network.stages[0].depth == 4


def test_nesting_beyond_the_recursion_limit_is_still_an_error() -> None:
    """Raising max_nesting past what Python's recursion allows crashed with RecursionError."""
    text = BASE.replace("depth: int = 4", "depth: int = " + "2^" * 5000 + "1")
    limits = Limits(max_nesting=10**6, max_tokens=10**6)
    ds = refused(load_spec, text, limits=limits, heap_mb=16)  # the tree
    assert [d.code for d in ds] == ["E101"] and ds[0].span.line == 1
    assert "recursion limit" in (ds[0].hint or "")


# ------------------------------------------------------------------ the Limits object
def test_every_limit_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for i, f in enumerate(fields(Limits)):
        monkeypatch.setenv(f"ODEDSL_MAX_{f.name.upper()[4:]}", str(1000 + i))
    got = Limits.from_env()
    assert [getattr(got, f.name) for f in fields(Limits)] == [
        1000 + i for i in range(len(fields(Limits)))
    ]
    assert all(f.name.startswith("max_") for f in fields(Limits))


def test_explicit_limits_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "1")
    assert load_spec(BASE, limits=Limits()).network.stages[0].depth == 4
    assert Limits.from_env(Limits(max_width=5)) == Limits(max_depth=1, max_width=5)


def test_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "lots")
    with pytest.raises(DslError) as err:
        load_spec(BASE)
    (d,) = err.value.diagnostics
    assert d.code == "E130" and d.span is None and "ODEDSL_MAX_DEPTH='lots'" in d.message


def test_a_huge_environment_value_is_refused_shortly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past Python's 4300-digit ``int`` limit it raised ValueError; the message shows 40
    characters of it, not 5000."""
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "9" * 5000)
    with pytest.raises(DslError) as err:
        load_spec(BASE)
    (d,) = err.value.diagnostics
    assert d.code == "E130" and "ODEDSL_MAX_DEPTH='" + "9" * 37 + "...'" in d.message
    assert len(d.message) < 120


def test_the_runtime_reads_max_values_by_the_front_ends_rule() -> None:
    """Two copies of one rule (the runtime carries no front end, the front end no torch)."""
    from odedsl.limits import limit_from_text as front
    from odedsl.runtime.weights import limit_from_text as runtime

    cases = ["", " ", "0", "7", " 12 ", "+3", "-1", "1_0", "1e3", "²", "٣", "9" * 100, "9" * 101]
    for raw in cases:
        assert front(raw) == runtime(raw), raw
    assert front("9" * 5000) is None and front(" 12 ") == 12


def test_limits_import_no_torch() -> None:
    """``odedsl.Limits`` is public API of a package that imports torch only when needed."""
    code = "import sys, odedsl.limits; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
