"""Every located error of the spec front end says what to do: a hint, and the right one.

(a) For each code E100–E250 that a spec's text can trigger, representative bad specs and the
hint each must carry (its content, not just that there is one). E260 and E261 are not here:
the exporter reports them for names and output paths, never for a spec's text (their hints
are checked in tests/export/test_safety.py).

(b) A static check over ``odedsl/``: every ``.error(`` call with an ``"E2..."`` code literal
passes a hint; in the front end (``odedsl/syntax``, ``odedsl/spec``, ``odedsl/integrators``)
every located diagnostic does, whatever its code or how it is built, and a bare
``did_you_mean(...)`` hint only stands for a small fixed set of choices (it says nothing past
12 names with none close). Outside it (the CLI, training, checkpoints, the compiler, limits,
the exporter), every diagnostic does too, built directly or through the helpers that make one
(``CheckpointError``, ``bad_option``, ``bad_data``, training checkpoints' ``_error``, the
exporter's ``refuse``); a helper whose ``hint`` defaults to None must be one of those, so that
its calls are checked. The exporter's refusals that no input can reach say they are a bug
(``safety.BUG``), and exactly the sites listed in :data:`EXPORT_INTERNAL` do.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import odedsl
from odedsl import DslError, Limits, load_spec
from odedsl.diagnostics import Diagnostic
from odedsl.runtime import Invert

from .test_validate import BASE

STEM = "    stem { conv2d(width, kernel=3, padding=1) batchnorm2d relu }\n"
HEAD = "    head { adaptive_avgpool2d(1) flatten linear(10) }\n"
NO_INVERSE = "integrator bad(x) { x = f(x, t) }\n"
NEEDS_K = "integrator needk(x; k: float) { x += k * h * f(x, t) }\n"
BLOCK = "block unit(c: int, k: int = 3) { conv2d(c, kernel=k, padding=k // 2) }\n"


def first_error(
    source: str | Path, limits: Limits | None = None, code: str | None = None, **params
) -> Diagnostic:
    """The first error a load reports (the first of ``code`` when given)."""
    with pytest.raises(DslError) as err:
        load_spec(source, limits=limits, **params)
    errors = [d for d in err.value.diagnostics if d.severity == "error"]
    return next((d for d in errors if code in (None, d.code)), errors[0])


def edit(*pairs: str, extra: str = "") -> str:
    """BASE with each ``old => new`` replaced (every old must occur), then ``extra`` appended."""
    text = BASE
    for pair in pairs:
        old, new = pair.split(" => ")
        assert old in text, old
        text = text.replace(old, new, 1)
    return text + extra


# (id, spec text, code, fragments the hint must contain)
TEXT_CASES = [
    # -- E100 syntax
    ("eof", "network n() { stem { relu }", "E100", ["expected", "line 1, column 13", "add '}'"]),
    ("char", edit("batchnorm2d relu => batchnorm2d $ relu"), "E100", ["names are ASCII"]),
    ("token", edit("linear(10) => linear(10 10)"), "E100", ["expected '%', ')'"]),
    # -- E111 forbidden import (in text: no file needed)
    ("absolute", 'import "/etc/x.ode"\n' + BASE, "E111", ["relative to the current folder"]),
    ("no-ext", 'import "lib/blocks"\n' + BASE, "E111", ['import "lib/blocks.ode"']),
    ("not-ode", 'import "lib/blocks.txt"\n' + BASE, "E111", ["end in .ode"]),
    # -- E120 duplicates
    ("block-twice", edit(extra=BLOCK + BLOCK), "E120", ["first defined at <spec>:10:1"]),
    (
        "param-twice",
        edit("width: int = 8) => width: int = 8, depth: int = 2)"),
        "E120",
        ["rename or remove one", "line 1, column 13"],
    ),
    (
        "stage-twice",
        edit("    head => stage body = ode(2) { residual { relu } }\n    head"),
        "E120",
        ["each stage its own name"],
    ),
    ("stage-stem", edit("stage body => stage stem"), "E120", ["names the network's stem"]),
    (
        "residual-twice",
        edit("residual { conv2d => residual f = { relu }\n        residual { conv2d"),
        "E120",
        ["keep one", "line 6, column 9", "without a name binds 'f'"],
    ),
    # -- E200 unknown names
    ("name-close", edit("ode(depth) => ode(dept)"), "E200", ["did you mean 'depth'?"]),
    (
        "name-none",
        edit("net(depth: int = 4, width: int = 8) => net()", "ode(depth) => ode(2 * n)").replace(
            "width", "8"
        ),
        "E200",
        ["declare it as a parameter of the network or block"],
    ),
    ("integrator-close", edit("integrator euler => integrator eulr"), "E200", ["'euler'"]),
    (
        "integrator-few",
        edit("integrator euler => integrator zzzzzz"),
        "E200",
        ["expected one of: additive_coupling, euler", "rk4"],
    ),
    (
        "integrator-far",
        edit("integrator euler => integrator zzzzzz")
        + "".join(f"integrator mine{i}(x) {{ x += h * f(x, t) }}\n" for i in range(4)),
        "E200",
        ["the integrators are", "mine3", "rk4", "`integrator NAME(x) { ... }`"],
    ),
    (
        "residual-name",
        edit("residual { conv2d => residual g = { conv2d"),
        "E200",
        ["expected one of: f"],
    ),
    ("input-kind", edit("input image => input imag"), "E200", ["did you mean 'image'?"]),
    ("function", edit("ode(depth) => ode(mx(depth, 2))"), "E200", ["did you mean 'max'?"]),
    # -- E201 unknown layer
    ("layer-close", edit("batchnorm2d relu => batchnrm2d relu"), "E201", ["'batchnorm2d'"]),
    (
        "layer-far",
        edit("batchnorm2d relu => qqqqqq relu"),
        "E201",
        ["the layers are conv2d", "pad_channels", "`block NAME(...) { ... }`"],
    ),
    # -- E202 bad arguments
    ("arg-type", edit("kernel=3, padding=1) b => kernel=2.5, padding=1) b"), "E202", ["whole"]),
    (
        "arg-range",
        edit("kernel=3, padding=1) b => kernel=3, stride=100) b"),
        "E202",
        ["stride is a whole number ≥ 1 and ≤ 64"],
    ),
    # `width / 2` is 8.0: a block's int parameter takes it, a layer's argument does not
    ("arg-div", edit("linear(10) => linear(width / 2)"), "E202", ["a float: `/`", "`//`"]),
    ("arg-float", edit("flatten linear => flatten dropout(2) linear"), "E202", ["≥ 0 and < 1"]),
    ("arg-bool", edit("linear(10) => linear(10, bias=1)"), "E202", ["bias is true or false"]),
    (
        "arg-choice",
        edit("linear(10) => linear(10, init=ones)"),
        "E202",
        ["expected one of: default, zeros"],
    ),
    ("arg-twice", edit("linear(10) => linear(10, out=10)"), "E202", ["already given", "remove"]),
    (
        "block-extra",
        edit("residual { conv2d(width, kernel=3, padding=1) relu } => residual unit(8, 3, 1)")
        + BLOCK,
        "E202",
        ["remove the extra argument", "its parameters are c, k"],
    ),
    (
        "block-kw",
        edit("residual { conv2d(width, kernel=3, padding=1) relu } => residual unit(8, kernal=3)")
        + BLOCK,
        "E202",
        ["expected one of: c, k"],
    ),
    ("alias-on-relu", edit("relu }\n    } => relu as K }\n    }"), "E202", ["remove `as K`"]),
    # -- E203 missing arguments
    ("layer-missing", edit("linear(10) => linear()"), "E203", ["`linear(out=...)`"]),
    (
        "block-missing",
        edit("residual { conv2d(width, kernel=3, padding=1) relu } => residual unit()") + BLOCK,
        "E203",
        ["`unit(c=...)`", "default"],
    ),
    (
        "integrator-missing",
        edit("integrator euler => integrator needk") + NEEDS_K,
        "E203",
        ["`integrator needk(k=...)`"],
    ),
    ("param-missing", edit("depth: int = 4 => depth: int"), "E203", ["or pass depth=..."]),
    # -- E204 types
    ("int", edit("depth: int = 4 => depth: int = 2.5"), "E204", ["round it", "floor(x)"]),
    ("int-str", edit('depth: int = 4 => depth: int = "4"'), "E204", ["whole number, e.g. 8"]),
    ("bool", edit("width: int = 8) => width: int = 8, b: bool = 1)"), "E204", ["true or false"]),
    ("str", edit("width: int = 8) => width: int = 8, s: str = 1)"), "E204", ["double quotes"]),
    ("float", edit("width: int = 8) => width: int = 8, r: float = true)"), "E204", ["e.g. 0.5"]),
    ("type", edit("depth: int => depth: itn"), "E204", ["did you mean 'int'?"]),
    ("arity", edit("ode(depth) => ode(min(depth))"), "E204", ["write min(a, b)"]),
    ("operand", edit("ode(depth) => ode(depth + true)"), "E204", ["take numbers"]),
    # -- E205 ranges
    ("depth", edit("ode(depth) => ode(0)"), "E205", ["from 1 to 100,000"]),
    ("step", edit("integrator euler => integrator euler step 0"), "E205", ["(0, 1000]", "1/depth"]),
    ("input-dim", edit("image[3, 16, 16] => image[0, 16, 16]"), "E205", ["at least 1"]),
    ("checkpoint", edit("euler => euler backward checkpoint(0)"), "E205", ["from 1 to"]),
    ("interpolated", edit("euler => euler weights interpolated(1)"), "E205", ["is `tied`"]),
    ("shared", edit("euler => euler weights shared(9)"), "E205", ["fewer groups"]),
    ("big", edit("ode(depth) => ode(1e20)"), "E205", ["below 1e15"]),
    ("power", edit("ode(depth) => ode(10 ^ 100)"), "E205", ["below 1e15"]),
    ("literal", edit("ode(depth) => ode(1e999)"), "E205", ["below 1.8e308"]),
    # -- E206 arithmetic
    ("div0", edit("ode(depth) => ode(depth / (depth - 4))"), "E206", ["'/' is 0", "max(1, n)"]),
    ("sqrt", edit("ode(depth) => ode(sqrt(-depth))"), "E206", ["sqrt(abs(x))"]),
    ("zero-pow", edit("ode(depth) => ode(0 ^ -1)"), "E206", ["nonzero base"]),
    ("frac-pow", edit("ode(depth) => ode((0 - 8) ^ 0.5)"), "E206", ["whole exponent"]),
    # -- E210 structure
    ("no-network", "block b() { relu }\n", "E210", ["add `network NAME(...)"]),
    ("no-input", edit("    input image[3, 16, 16]\n => "), "E210", ["input image[3, 32, 32]"]),
    (
        "two-inputs",
        edit("]\n    stem => ]\n    input vector[4]\n    stem"),
        "E210",
        ["remove this one", "line 2, column 5"],
    ),
    ("no-stage", "network n() { input vector[4] head { linear(2) } }", "E210", ["add `stage"]),
    ("two-stems", edit("    stage => stem { relu }\n    stage"), "E210", ["merge the layers"]),
    (
        "stem-order",
        edit(f"{STEM} => ", "    head { => " + STEM.strip() + "\n    head {"),
        "E210",
        ["move the stem before every stage"],
    ),
    (
        "head-order",
        edit(f"{HEAD} => ", "    stage => " + HEAD.strip() + "\n    stage"),
        "E210",
        ["move the head after every stage"],
    ),
    (
        "no-residual",
        edit("residual { conv2d(width, kernel=3, padding=1) relu } => "),
        "E210",
        ["add e.g. `residual {"],
    ),
    (
        "recursion",
        edit("residual { conv2d(width, kernel=3, padding=1) relu } => residual loop()")
        + "block loop() { relu loop() }\n",
        "E210",
        ["blocks cannot recurse"],
    ),
    # -- E220 shapes: which dimension to change
    (
        "residual-channels",
        edit("residual { conv2d(width, => residual { conv2d(16,"),
        "E220",
        ["end with 8 channels", "conv2d(8, kernel=3, padding=1)"],
    ),
    (
        "residual-size",
        edit("residual { conv2d(width, kernel=3, padding=1) => residual { conv2d(width, kernel=3)"),
        "E220",
        ["keep the size 16x16", "padding = kernel // 2"],
    ),
    (
        "residual-flatten",
        edit("relu }\n    } => flatten }\n    }"),
        "E220",
        ["no `flatten` inside a residual"],
    ),
    ("linear-image", edit("adaptive_avgpool2d(1) flatten linear => linear"), "E220", ["flatten"]),
    ("conv-vector", edit("flatten linear(10) => flatten conv2d(3)"), "E220", ["use linear"]),
    ("bn-vector", edit("flatten linear(10) => flatten batchnorm2d"), "E220", ["batchnorm1d"]),
    (
        "pool-vector",
        edit("flatten linear(10) => flatten maxpool"),
        "E220",
        ["before any `flatten`"],
    ),
    ("groupnorm", edit("batchnorm2d relu => groupnorm(5) relu"), "E220", ["groupnorm(4)"]),
    ("groups", edit("kernel=3, padding=1) b => kernel=3, padding=1, groups=3) b"), "E220", ["1"]),
    ("pool-pad", edit("flatten linear => maxpool(2, padding=2) flatten linear"), "E220", ["=1"]),
    ("kernel", edit("kernel=3, padding=1) b => kernel=32) b"), "E220", ["smaller kernel"]),
    (
        "convt",
        edit("flatten linear => conv_transpose2d(4, kernel=1, padding=3) flatten linear"),
        "E220",
        ["less padding"],
    ),
    ("input-rank", edit("image[3, 16, 16] => image[3, 16]"), "E220", ["`input image[3, 32, 32]`"]),
    (
        "split",
        edit(
            "integrator euler => integrator hamiltonian", "width: int = 8 => width: int = 7"
        ).replace("stem { conv2d(width", "stem { conv2d(7"),
        "E220",
        ["multiple of 2"],
    ),
    # -- E230 stage options
    ("weights", edit("euler => euler weights tide"), "E230", ["did you mean 'tied'?"]),
    ("backward", edit("euler => euler backward stor"), "E230", ["did you mean 'store'?"]),
    ("no-arg", edit("euler => euler weights tied(2)"), "E230", ["write `weights tied`"]),
    ("one-number", edit("euler => euler weights shared"), "E230", ["e.g. shared(4)"]),
    (
        "twice",
        edit("euler => euler\n        weights tied weights tied"),
        "E230",
        ["line 6, column"],
    ),
    ("param-name", edit("euler => momentum(gama=0.5)"), "E230", ["did you mean 'gamma'?"]),
    ("param-none", edit("euler => euler(0.5)"), "E230", ["write `integrator euler`"]),
    ("param-extra", edit("euler => momentum(0.5, 0.5)"), "E230", ["its parameters are gamma"]),
    # -- E231 no inverse: the modes that remain
    (
        "invert",
        edit("integrator euler => integrator bad backward invert") + NO_INVERSE,
        "E231",
        ["`backward store`", "`backward checkpoint(k)`"],
    ),
    # -- E240 integrator declarations
    (
        "read-early",
        edit(extra="integrator a(x) {\n    x += h * k1\n    k1 = f(x, t)\n}\n"),
        "E240",
        ["move the assignment of 'k1' above"],
    ),
    (
        "two-starts",
        edit(extra="integrator a(x) { start { x += h } start { x += h } x += h * f(x, t) }\n"),
        "E240",
        ["state the first step once"],
    ),
    (
        "coefficients",
        edit("integrator euler => integrator a") + "integrator a(x) { x += h / (t - t) * f(x, t) }",
        "E240",
        ["divisions", "parameter values"],
    ),
    # -- E250 resource limits
    ("max-depth", edit("ode(depth) => ode(1000000)"), "E250", ["ODEDSL_MAX_DEPTH"]),
    ("max-width", edit("linear(10) => linear(100000)"), "E250", ["ODEDSL_MAX_WIDTH"]),
    ("max-spatial", edit("image[3, 16, 16] => image[3, 16, 100000]"), "E250", ["SPATIAL"]),
    ("max-k", edit("euler => euler backward checkpoint(2 ^ 40)"), "E250", ["1 to 2,147,483,648"]),
]


@pytest.mark.parametrize(
    ("text", "code", "fragments"),
    [pytest.param(t, c, f, id=i) for i, t, c, f in TEXT_CASES if f],
)
def test_hint_says_what_to_do(text: str, code: str, fragments: list[str]) -> None:
    d = first_error(text, code=code)
    assert d.code == code, d.render()
    assert d.hint, d.render()
    for fragment in fragments:
        assert fragment in d.hint, d.render()
    assert f"hint: {d.hint}" in d.render()


def test_every_text_case_reports_its_code_with_a_hint() -> None:
    """The cases without fragments too: the code is the one named, and it has a hint."""
    for name, text, code, _ in TEXT_CASES:
        with pytest.raises(DslError) as err:
            load_spec(text)
        found = [d for d in err.value.diagnostics if d.code == code]
        assert found, (name, err.value.render())
        assert all(d.hint for d in found), (name, err.value.render())


def test_alias_used_twice() -> None:
    text = edit("relu }\n    } => as K relu conv2d(width, kernel=1) as K }\n    }")
    d = first_error(text)
    assert d.code == "E120" and "`as K2`" in (d.hint or ""), d.render()


def test_codes_of_the_front_end_are_all_covered() -> None:
    """Each code E100–E250 appears in TEXT_CASES or in one of the file-based tests below."""
    from_files = {"E101", "E110", "E112", "E113", "E130"}
    covered = {c for _, _, c, _ in TEXT_CASES} | from_files
    wanted = {c for c in odedsl.diagnostics.CODES if "E100" <= c <= "E250"}
    assert wanted <= covered, sorted(wanted - covered)


# -- codes that need files, limits or overrides


def test_e101_nesting_and_tokens() -> None:
    deep = edit("ode(depth) => ode(" + "(" * 10 + "depth" + ")" * 10 + ")")
    d = first_error(deep, Limits(max_nesting=4))
    assert d.code == "E101" and "ODEDSL_MAX_NESTING" in (d.hint or ""), d.render()
    d = first_error(BASE, Limits(max_tokens=20))
    assert d.code == "E101" and "ODEDSL_MAX_TOKENS" in (d.hint or ""), d.render()


def test_e110_files(tmp_path: Path) -> None:
    d = first_error(tmp_path / "missing.ode")
    assert d.code == "E110" and "current folder" in (d.hint or ""), d.render()
    (tmp_path / "folder.ode").mkdir()
    d = first_error(tmp_path / "folder.ode")
    assert d.code == "E110" and "inside the folder" in (d.hint or ""), d.render()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "block.ode").write_text(BLOCK)
    main = tmp_path / "main.ode"
    main.write_text('import "lib/blocks.ode"\n' + BASE)
    d = first_error(main)
    assert d.code == "E110" and "did you mean 'block.ode'" in (d.hint or ""), d.render()
    main.write_text('import "lib/other.ode"\n' + BASE)
    d = first_error(main)
    assert d.code == "E110" and "relative to the importing file" in (d.hint or ""), d.render()
    (tmp_path / "latin1.ode").write_bytes(b"# caf\xe9\n" + BASE.encode())
    d = first_error(tmp_path / "latin1.ode")
    assert d.code == "E110" and "UTF-8" in (d.hint or ""), d.render()


def test_e112_e113_imports(tmp_path: Path) -> None:
    (tmp_path / "a.ode").write_text('import "b.ode"\n' + BASE)
    (tmp_path / "b.ode").write_text('import "a.ode"\n')
    d = first_error(tmp_path / "a.ode")
    assert d.code == "E112" and "third file" in (d.hint or ""), d.render()
    (tmp_path / "c.ode").write_text('import "d.ode"\n' + BASE)
    (tmp_path / "d.ode").write_text('import "e.ode"\n')
    (tmp_path / "e.ode").write_text("")
    d = first_error(tmp_path / "c.ode", Limits(max_import_depth=2))
    assert d.code == "E113" and "ODEDSL_MAX_IMPORT_DEPTH" in (d.hint or ""), d.render()
    (tmp_path / "f.ode").write_text('import "d.ode"\nimport "e.ode"\n' + BASE)
    d = first_error(tmp_path / "f.ode", Limits(max_imports=2))
    assert d.code == "E113" and "ODEDSL_MAX_IMPORTS" in (d.hint or ""), d.render()


def test_e130_overrides() -> None:
    d = first_error(BASE, dpth=3)
    assert d.code == "E130" and "did you mean 'depth'?" in (d.hint or ""), d.render()
    d = first_error(BASE, depth="deep")
    assert d.code == "E130" and "e.g. depth=8" in (d.hint or ""), d.render()  # the API's spelling
    d = first_error(BASE.replace("width: int = 8", "flag: bool = true"), flag=3)
    assert "true or false" in (d.hint or ""), d.render()


def test_e200_unknown_network() -> None:
    d = first_error(BASE, network="nett")
    assert d.code == "E200" and "did you mean 'net'?" in (d.hint or ""), d.render()


def test_e250_block_nesting() -> None:
    text = edit(
        "residual { conv2d(width, kernel=3, padding=1) relu } => residual b1()",
        extra="block b1() { b2() }\nblock b2() { b3() }\nblock b3() { relu }\n",
    )
    d = first_error(text, Limits(max_block_nesting=1))
    assert d.code == "E250" and "ODEDSL_MAX_BLOCK_NESTING" in (d.hint or ""), d.render()


# -- (b) the static check

ROOT = Path(odedsl.__file__).parent
FRONT_END = ("syntax", "spec", "integrators")

#: (file under odedsl/, code): `.error(` calls with an "E2..." literal left without a hint.
ALLOWED_E2: dict[tuple[str, str], str] = {}

#: (file under odedsl/, code): located diagnostics of the front end left without a hint.
ALLOWED_FRONT_END: dict[tuple[str, str], str] = {
    # `_fail("E204", "not a value", ...)`: unreachable, the grammar has no other expression
    # node (marked `pragma: no cover`); there is no user input to advise about.
    ("spec/evaluate.py", "E204"): "unreachable: the grammar is closed",
}

#: Choice sets small and fixed enough that `did_you_mean` always answers (≤ 12 names).
SMALL_CHOICES = {"TYPES", "PARAM_TYPES", "FUNCTIONS", "WEIGHTS", "BACKWARDS", "INPUT_KINDS"}

#: Call name → the position of its hint argument: Diagnostics.error/.warning(code, message,
#: span, hint), Diagnostic(code, message, span, hint), evaluate's _fail(code, message, span,
#: hint); ExprLowerer's self.error(message, span, hint) reports E240.
HINT_POSITION = {"error": 3, "warning": 3, "Diagnostic": 3, "_fail": 3}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            if name in HINT_POSITION:
                yield node, name, func


def _code_and_hint(node: ast.Call, name: str, func: ast.expr) -> tuple[str | None, ast.expr | None]:
    args = list(node.args)
    self_error = (
        name == "error"
        and isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "self"
    )
    if self_error:  # ExprLowerer.error(message, span, hint): always E240
        code, position = "E240", 2
    else:
        first = args[0] if args else None
        code = first.value if isinstance(first, ast.Constant) else None
        position = HINT_POSITION[name]
    hint = args[position] if len(args) > position else None
    for kw in node.keywords:
        if kw.arg == "hint":
            hint = kw.value
    if isinstance(hint, ast.Constant) and hint.value is None:
        hint = None
    return (code if isinstance(code, str) else None), hint


def _bare_did_you_mean_over_open_set(hint: ast.expr) -> bool:
    """`did_you_mean(name, choices)` alone, with choices that may hold more than 12 names."""
    if not (
        isinstance(hint, ast.Call)
        and isinstance(hint.func, ast.Name)
        and hint.func.id == "did_you_mean"
    ):
        return False
    choices = hint.args[1] if len(hint.args) > 1 else None
    return not (isinstance(choices, ast.Name) and choices.id in SMALL_CHOICES)


def test_every_e2_error_call_in_odedsl_passes_a_hint() -> None:
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node, name, func in _calls(path):
            if name != "error":
                continue
            code, hint = _code_and_hint(node, name, func)
            if code and code.startswith("E2") and hint is None:
                if (rel, code) not in ALLOWED_E2:
                    missing.append(f"{rel}:{node.lineno} {code}")
    assert not missing, "error calls without a hint:\n" + "\n".join(missing)


def test_every_front_end_diagnostic_passes_a_useful_hint() -> None:
    missing, used = [], set()
    for part in FRONT_END:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node, name, func in _calls(path):
                code, hint = _code_and_hint(node, name, func)
                if code is None or code[0] not in "EW":
                    continue
                if hint is not None and not _bare_did_you_mean_over_open_set(hint):
                    continue
                if (rel, code) in ALLOWED_FRONT_END:
                    used.add((rel, code))
                    continue
                why = "no hint" if hint is None else "did_you_mean alone, over an open set"
                missing.append(f"{rel}:{node.lineno} {code}: {why}")
    assert not missing, "front-end diagnostics without a useful hint:\n" + "\n".join(missing)
    assert used == set(ALLOWED_FRONT_END), "stale allow-list entries"


#: Outside the front end: the parts of ``odedsl/`` whose diagnostics are checked.
OUTSIDE = ("cli", "training", "checkpoints.py", "compiler", "limits.py", "export")

#: Calls that make a diagnostic outside the front end → (hint position, code position or
#: None, default code). ``Diagnostic(code, message, span, hint)``; ``CheckpointError(message,
#: hint, *, code="E220")``; ``bad_option(message, hint, code="E205")``; ``bad_data(message,
#: hint)`` (E110); ``_error(code, message, hint)`` of ``odedsl/training/checkpoint.py``;
#: ``refuse(code, message, *, hint)`` of ``odedsl/export/safety.py``; ``report_failure(command,
#: message, hint, *, as_json)`` of ``odedsl/cli/common.py`` (a failed run, no code: "run").
OUTSIDE_CALLS: dict[str, tuple[int, int | None, str | None]] = {
    "Diagnostic": (3, 0, None),
    "error": (3, 0, None),
    "CheckpointError": (1, None, "E220"),
    "bad_option": (1, 2, "E205"),
    "bad_data": (1, None, "E110"),
    "_error": (2, 0, None),
    "refuse": (2, 0, None),
    "report_failure": (2, None, "run"),
}

#: (file under odedsl/, code): diagnostics outside the front end left without a hint, each
#: with the reason none can be given.
ALLOWED_OUTSIDE: dict[tuple[str, str], str] = {
    ("cli/train_cmd.py", "run"): "a failure of any kind while training: the message is "
    "the exception's own, which carries its advice (a diverging loss's tips)",
    ("cli/gradcheck_cmd.py", "run"): "a failure of any kind in a check: the message is "
    "the exception's own, which carries its advice (a NumericalFault's hint line)",
}


def _outside_files() -> list[Path]:
    out: list[Path] = []
    for part in OUTSIDE:
        path = ROOT / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _outside_sites(path: Path):
    """(line, call name, code, hint node) of every diagnostic-making call in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = getattr(func, "attr", None) or getattr(func, "id", None)
        if name not in OUTSIDE_CALLS:
            continue
        if name == "error" and len(node.args) + len(node.keywords) < 2:
            continue  # argparse's parser.error(message): a usage line that carries its advice
        hint_at, code_at, code = OUTSIDE_CALLS[name]
        args = list(node.args)
        hint = args[hint_at] if len(args) > hint_at else None
        if code_at is not None and len(args) > code_at:
            code = args[code_at].value if isinstance(args[code_at], ast.Constant) else "?"
        for kw in node.keywords:
            if kw.arg == "hint":
                hint = kw.value
            if kw.arg == "code":
                code = kw.value.value if isinstance(kw.value, ast.Constant) else "?"
        if isinstance(hint, ast.Constant) and hint.value is None:
            hint = None
        yield node.lineno, name, code, hint


def _hint_parameters_defaulting_to_none(path: Path):
    """(line, name) of functions with a ``hint`` parameter that defaults to None; an
    ``__init__`` is named by its class."""
    tree = ast.parse(path.read_text(), str(path))
    owners = {id(f): c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        a = node.args
        positional = a.posonlyargs + a.args
        pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
        pairs += [
            (arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None
        ]
        for arg, default in pairs:
            if arg.arg == "hint" and isinstance(default, ast.Constant) and default.value is None:
                name = owners.get(id(node), node.name) if node.name == "__init__" else node.name
                yield node.lineno, name


def test_every_diagnostic_outside_the_front_end_passes_a_hint() -> None:
    missing, used, seen = [], set(), 0
    for path in _outside_files():
        rel = path.relative_to(ROOT).as_posix()
        for line, name, code, hint in _outside_sites(path):
            seen += 1
            if hint is not None:
                continue
            if (rel, code) in ALLOWED_OUTSIDE:
                used.add((rel, code))
                continue
            missing.append(f"{rel}:{line} {name} {code}")
    assert seen > 80, seen  # the scan finds the sites (63, then 89 with the exporter's)
    assert not missing, "diagnostics without a hint:\n" + "\n".join(missing)
    assert used == set(ALLOWED_OUTSIDE), "stale allow-list entries"


def test_helpers_with_an_optional_hint_have_their_calls_checked() -> None:
    """A new helper ``def fail(message, hint=None)`` would hide hint-less calls from the scan."""
    unchecked = [
        f"{path.relative_to(ROOT).as_posix()}:{line} {name}"
        for path in _outside_files()
        for line, name in _hint_parameters_defaulting_to_none(path)
        if name not in OUTSIDE_CALLS
    ]
    assert not unchecked, "add them to OUTSIDE_CALLS, or make hint required:\n" + "\n".join(
        unchecked
    )


def test_the_outside_scan_sees_missing_hints(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "raise CheckpointError('m', code='E110')\n"
        "raise CheckpointError('m', 'h')\n"
        "raise CheckpointError('m', hint=None)\n"
        "raise bad_option('m', 'h', 'E130')\n"
        "raise bad_option('m', None)\n"
        "raise _error('E110', 'm')\n"
        "DslError([Diagnostic('E205', 'm', None)])\n"
        "DslError([Diagnostic('E205', 'm', None, hint)])\n"
        "raise refuse(E_NAME, 'm')\n"
        "raise refuse('E261', 'm', hint='h')\n"
        "def helper(message, hint=None): pass\n"
        "class Boom(Exception):\n"
        "    def __init__(self, message, *, hint=None): pass\n"
    )
    sites = sorted(_outside_sites(sample), key=lambda site: site[0])  # ast.walk: breadth first
    found = [(name, code, hint is None) for _, name, code, hint in sites]
    assert found == [
        ("CheckpointError", "E110", True),
        ("CheckpointError", "E220", False),
        ("CheckpointError", "E220", True),
        ("bad_option", "E130", False),
        ("bad_option", "E205", True),
        ("_error", "E110", True),
        ("Diagnostic", "E205", True),
        ("Diagnostic", "E205", False),
        ("refuse", "?", True),
        ("refuse", "E261", False),
    ]
    assert [n for _, n in _hint_parameters_defaulting_to_none(sample)] == ["helper", "Boom"]


def test_the_static_check_sees_a_missing_hint(tmp_path: Path) -> None:
    """The scan itself: a call without a hint, one with None and a bare did_you_mean over an
    open set are found; keyword and positional hints are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "diags.error('E205', 'm', span)\n"
        "diags.error('E205', 'm', span, None)\n"
        "diags.error('E200', 'm', span, did_you_mean(n, names))\n"
        "diags.error('E204', 'm', span, did_you_mean(n, TYPES))\n"
        "diags.error('E205', 'm', span, hint='h')\n"
        "self.error('m', span)\n"
        "self.error('m', span, 'h')\n"
    )
    found = []
    for node, name, func in _calls(sample):
        code, hint = _code_and_hint(node, name, func)
        found.append((code, hint is None or _bare_did_you_mean_over_open_set(hint)))
    assert found == [
        ("E205", True),
        ("E205", True),
        ("E200", True),
        ("E204", False),
        ("E205", False),
        ("E240", True),
        ("E240", False),
    ]


def test_e231_of_a_backward_override_names_both_modes_without_an_inverse() -> None:
    """``compile(..., backward="invert")`` of a stage without an inverse: as the front end's
    E231, the hint names store and checkpoint(k)."""
    text = edit("integrator euler => integrator bad") + NO_INVERSE
    with pytest.raises(DslError) as err:
        odedsl.compile(text, backward="invert")
    (d,) = err.value.diagnostics
    assert d.code == "E231", d.render()
    assert "backward='store'" in (d.hint or "") and "backward='checkpoint(k)'" in (d.hint or "")
    with pytest.raises(DslError) as err:  # a mode object with anchors: the same E231, located
        odedsl.compile(text, backward=Invert(anchor_every=2))
    assert err.value.diagnostics[0].code == "E231"


# -- the exporter: refusals no spec, option or output folder can reach say they are a bug

#: (file under odedsl/, innermost function) → (how many of its refusals, why no input reaches
#: them): the exporter's refusals of broken internal invariants, whose hint is ``safety.BUG`` (or
#: ``vendor.MERGE_BUG``, which starts with it). Every other refusal has a hint of its own.
EXPORT_INTERNAL: dict[tuple[str, str], tuple[int, str]] = {
    ("export/safety.py", "literal"): (1, "callers pass a validated spec's numbers and booleans"),
    ("export/layers.py", "_transpose"): (1, "validation gives each transpose layer its reference"),
    ("export/layers.py", "layer_call"): (1, "CALLS covers every layer kind (test_compile_export)"),
    ("export/steps.py", "_kind"): (1, "inverse kinds are the runtime's four"),
    ("export/steps.py", "_step_expr"): (1, "exact updates are AffineUpdate or SwapUpdate"),
    ("export/steps.py", "_init_lines"): (1, "integrator programs start from an InitState"),
    ("export/steps.py", "_output_line"): (1, "integrator programs end with an Output"),
    ("export/graphcode.py", "_number"): (1, "integrator graphs hold int and float constants"),
    ("export/graphcode.py", "render"): (1, "graphcode renders every operation emit writes"),
    ("export/graphcode.py", "render_graph"): (1, "graphs hold placeholders, calls and an output"),
    ("export/vendor.py", "_load"): (2, "the runtime's own imports, not a spec's"),
    ("export/vendor.py", "visit"): (1, "the runtime's own import graph"),
    ("export/vendor.py", "_vendor"): (1, "the runtime's own top-level names"),
    ("export/writer.py", "target_path"): (1, "file names are vetted network names plus .py"),
}


def _refusals(path: Path):
    """(innermost enclosing function, hint node) of each ``refuse(...)`` call in ``path``."""

    def walk(node: ast.AST, fn: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef):
                yield from walk(child, child.name)
                continue
            if isinstance(child, ast.Call) and getattr(child.func, "id", None) == "refuse":
                hints = [k.value for k in child.keywords if k.arg == "hint"]
                yield fn, (hints[0] if hints else None)
            yield from walk(child, fn)

    yield from walk(ast.parse(path.read_text(), str(path)), "<module>")


def _says_bug(hint: ast.expr | None) -> bool:
    names = {n.id for n in ast.walk(hint) if isinstance(n, ast.Name)} if hint else set()
    return bool(names & {"BUG", "MERGE_BUG"})


def test_export_refusals_of_internal_invariants_say_it_is_a_bug() -> None:
    from odedsl.export.safety import BUG

    vendor = importlib.import_module("odedsl.export.vendor")  # not the function `vendor`
    assert vendor.MERGE_BUG.startswith(BUG) and "odedsl bug" in BUG and "report" in BUG
    bugs: dict[tuple[str, str], int] = {}
    total = 0
    for path in sorted((ROOT / "export").glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for fn, hint in _refusals(path):
            total += 1
            assert hint is not None, f"{rel} {fn}: refuse without a hint"
            if _says_bug(hint):
                bugs[(rel, fn)] = bugs.get((rel, fn), 0) + 1
    assert bugs == {site: n for site, (n, _) in EXPORT_INTERNAL.items()}
    assert total >= 25, total  # the scan sees the refusals (26 when written)


def test_the_export_scan_sees_internal_refusals(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def outer():\n"
        "    def inner():\n"
        "        raise refuse('E260', 'm', hint=f'{BUG}: why')\n"
        "    raise refuse('E260', 'm', hint='rename it')\n"
        "    raise refuse('E260', 'm')\n"
        "raise refuse('E260', 'm', hint=MERGE_BUG)\n"
    )
    found = [(fn, hint is not None and _says_bug(hint)) for fn, hint in _refusals(sample)]
    assert found == [("inner", True), ("outer", False), ("outer", False), ("<module>", True)]


def test_refuse_requires_a_keyword_hint() -> None:
    from odedsl.export.safety import refuse

    hint = inspect.signature(refuse).parameters["hint"]
    assert hint.kind is inspect.Parameter.KEYWORD_ONLY
    assert hint.default is inspect.Parameter.empty
