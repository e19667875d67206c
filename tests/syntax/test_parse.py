"""The parser: every construct of the grammar becomes its AST node, with exact spans."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from odedsl.diagnostics import DslError
from odedsl.syntax import ast
from odedsl.syntax.parse import grammar_text, keywords, parse

FULL = """\
import "lib/blocks.ode"
# a comment
network net(depth: int = 4, width = 2 * 8, rate: float = 1e-3, flag: bool = true) {
    input image[3, 32, 32]
    stem { conv2d(width, kernel=5, stride=3); batchnorm2d relu }
    stage body = ode(depth) {
        integrator momentum(gamma=0.5)
        step 1 / depth
        weights interpolated(4)
        backward checkpoint(2)
        residual f = block_a(width)
        residual g = { conv2d(width, kernel=3, padding=1) as K relu transpose(K) }
    }
    transition { avgpool(2) pad_channels(32) }
    head { adaptive_avgpool2d(1); flatten; linear(10) }
}
block block_a(c: int, p: float = 0.1) { conv2d(c, kernel=3, padding=1) dropout(p) }
integrator lf(x) two_step {
    start { next = x - h^2 / 2 * f(x, t) } next = 2 * x - prev - h^2 * f(x, t) }
integrator ham(y, z) split channels { y += h * f(z, t); z -= h * g(y, t + h) }
integrator mom(x, v = 0; gamma: float = 0.9) { v = gamma * v + (1 - gamma) * f(x, t) x += v }
"""


def test_every_construct_parses_to_its_node() -> None:
    mod = parse(FULL, "full.ode")
    assert [i.path for i in mod.imports] == ["lib/blocks.ode"]
    (net,) = mod.networks
    assert net.name == "net"
    assert [(p.name, p.type) for p in net.params] == [
        ("depth", "int"),
        ("width", None),
        ("rate", "float"),
        ("flag", "bool"),
    ]
    assert isinstance(net.params[1].default, ast.BinOp)
    assert isinstance(net.params[3].default, ast.Bool)
    kinds = [type(i).__name__ for i in net.items]
    assert kinds == ["InputDecl", "Section", "StageDecl", "Section", "Section"]
    stage = net.items[2]
    assert isinstance(stage, ast.StageDecl)
    assert [c.keyword for c in stage.clauses] == ["integrator", "step", "weights", "backward"]
    assert stage.clauses[0].args[0].name == "gamma"
    assert [r.binds for r in stage.residuals] == ["f", "g"]
    g = stage.residuals[1].body
    assert isinstance(g, ast.LayerSeq)
    assert g.layers[0].alias == "K"
    assert g.layers[2].call.name == "transpose"
    (block,) = mod.blocks
    assert block.name == "block_a" and block.params[1].default.value == 0.1
    lf, ham, mom = mod.integrators
    assert lf.two_step and lf.start is not None and lf.body[0].target == "next"
    assert ham.split_channels and [s.name for s in ham.state] == ["y", "z"]
    assert [a.op for a in ham.body] == ["+=", "-="]
    assert mom.state[1].init is not None and mom.params[0].name == "gamma"


def test_spans_are_exact() -> None:
    mod = parse(FULL, "full.ode")
    stage = mod.networks[0].items[2]
    assert (stage.span.line, stage.span.column) == (6, 5)
    clause = stage.clauses[2]
    assert (clause.name_span.line, clause.name_span.column) == (9, 17)
    conv = mod.networks[0].items[1].body.layers[0].call
    assert (conv.name_span.line, conv.name_span.column, conv.name_span.end_column) == (5, 12, 18)
    assert conv.span.file == "full.ode"


def test_operator_precedence_and_numbers() -> None:
    mod = parse("network n(a = -2 ^ 2 * 3 + 4 / 2 // 1 % 5, b = 1.5e2, c = .5) {}")
    a = mod.networks[0].params[0].default
    assert isinstance(a, ast.BinOp) and a.op == "+"
    left = a.left
    assert left.op == "*" and isinstance(left.left, ast.UnaryOp)  # -(2^2) * 3
    assert left.left.operand.op == "^"
    assert mod.networks[0].params[1].default.value == 150.0
    assert mod.networks[0].params[2].default.value == 0.5


def _ast_classes() -> set[str]:
    return {n for n, c in vars(ast).items() if dataclasses.is_dataclass(c) and n != "Node"}


def test_every_grammar_rule_has_its_node() -> None:
    """Each named rule or alias of the grammar is handled by the transformer."""
    from odedsl.syntax.parse import _ToAst

    rules = set(re.findall(r"^\??([a-z_]+):", grammar_text(), re.M))
    aliases = set(re.findall(r"->\s*([a-z_]+)", grammar_text()))
    inlined = {
        "integrator_option",
        "item",
        "net_item",
        "stage_item",
        "arg",
        "update_stmt",
        "expr",
        "sum",
        "product",
        "unary",
        "power",
        "atom",
    }
    for name in (rules | aliases) - inlined:
        assert hasattr(_ToAst, name), f"grammar rule {name} has no transformer method"
    assert len(_ast_classes()) >= 20


def test_keywords_are_contextual() -> None:
    """Lark's contextual lexer reads a keyword as a name where only a name can stand."""
    assert {"network", "stage", "integrator", "block", "import"} <= keywords()
    mod = parse("block stage() { relu }")
    assert mod.blocks[0].name == "stage"
    with pytest.raises(DslError) as err:
        parse("network n() { stage stage }")
    assert err.value.diagnostics[0].span.column == 27


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("network n( { }", 1, 12, "unexpected '{'"),
        ("network n() {\n  stem { conv2d(3,,) }\n}", 2, 19, "unexpected ','"),
        ("network n() { stem { relu }", 1, 28, "unexpected end of file"),
        ("network n() {\n  stem { relu @ }\n}", 2, 15, "unexpected character '@'"),
        ("network n() { stem { relu } }\nnetwork", 2, 8, "unexpected end of file"),
        ("integrator e(x) { x += }", 1, 24, "unexpected '}'"),
        ("integrator e(x) { x *= 2 }", 1, 21, "unexpected '*'"),
        ("import blocks.ode", 1, 8, "unexpected name 'blocks'"),
        ("network n() { input image[3,, 4] }", 1, 29, "unexpected ','"),
        ("network n() { stage s = ode(4) { integrator } }", 1, 45, "unexpected '}'"),
        ("block b() { relu }\nblock b2() { relu ", 2, 18, "unexpected end of file"),
        ("network n() { stem { conv2d(é) } }", 1, 29, "unexpected character 'é'"),
        (
            "integrator lf(x) two_step { start { next = x } start { next = x } next = prev }",
            1,
            48,
            "two start blocks",
        ),
    ],
)
def test_syntax_errors_are_located(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(DslError) as err:
        parse(text, "bad.ode")
    d = err.value.diagnostics[0]
    assert message in d.message
    assert (d.span.file, d.span.line, d.span.column) == ("bad.ode", line, col)
    rendered = err.value.render()
    assert rendered.startswith(f"bad.ode:{line}:{col}: error:")
    assert "^" in rendered


def test_unterminated_string_is_named_as_such() -> None:
    """A string left open is not an "unexpected character" whose hint says to use double
    quotes (it does): the error names the open string and how to close it."""
    with pytest.raises(DslError) as err:
        parse('import "blocks.ode\nnetwork n() { }', "bad.ode")
    d = err.value.diagnostics[0]
    assert (d.message, d.span.line, d.span.column) == ("unterminated string", 1, 8)
    assert "closing" in (d.hint or "")
    with pytest.raises(DslError) as err:
        parse('import "sub\\blocks.ode"', "bad.ode")
    d = err.value.diagnostics[0]
    assert (d.message, d.span.line, d.span.column) == ("a backslash in a string", 1, 12)


def test_rendered_error_has_caret_under_the_token() -> None:
    with pytest.raises(DslError) as err:
        parse("network n() {\n    stem { conv2d(3,,) }\n}", "x.ode")
    lines = err.value.render().splitlines()
    source_line, caret_line = lines[1], lines[2]
    assert source_line.endswith("stem { conv2d(3,,) }")
    assert caret_line.index("^") == source_line.index(",,") + 1


def test_nesting_limit_is_an_error_not_a_crash() -> None:
    deep = "network n(a = " + "(1 + " * 500 + "1" + ")" * 500 + ") {}"
    with pytest.raises(DslError) as err:
        parse(deep)
    assert "nesting deeper" in err.value.diagnostics[0].message
    unary = "network n(a = " + "-" * 5000 + "1) {}"
    with pytest.raises(DslError):
        parse(unary)


def test_size_limit() -> None:
    from odedsl.limits import Limits

    with pytest.raises(DslError) as err:
        parse("# x\n" * 100, limits=Limits(max_spec_bytes=100))
    assert err.value.diagnostics[0].code == "E101"


def test_grammar_ships_in_the_package() -> None:
    assert (Path(__file__).parents[2] / "grammars" / "odedsl.lark").read_text() == grammar_text()
