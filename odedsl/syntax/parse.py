"""Text → syntax tree: the Lark LALR parser, its error messages, and the tree → AST transformer."""

from __future__ import annotations

import math
import re
import sys
from functools import cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from odedsl.diagnostics import Diagnostic, DslError, SourceFile, Span
from odedsl.limits import Limits
from odedsl.syntax import ast

#: Longest number literal accepted (no meaningful size or rate needs more characters).
MAX_NUMBER_CHARS = 400
#: Longest name accepted (generated code and messages quote names; none needs more).
MAX_NAME_CHARS = 256

# Human names for the grammar's anonymous terminals, for "expected ..." messages.
_TOKEN_WORDS = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "SEMICOLON": "';'",
    "COLON": "':'",
    "EQUAL": "'='",
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "ASSIGN_OP": "'=', '+=' or '-='",
    "CIRCUMFLEX": "'^'",
    "PERCENT": "'%'",
    "$END": "end of file",
}


@cache
def grammar_text() -> str:
    """The grammar: ``grammars/odedsl.lark`` in a source tree, package data in a wheel."""
    in_tree = Path(__file__).resolve().parents[2] / "grammars" / "odedsl.lark"
    if in_tree.is_file():
        return in_tree.read_text()
    return resources.files("odedsl.grammars").joinpath("odedsl.lark").read_text()


@cache
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def keywords() -> frozenset[str]:
    """Reserved words: the grammar's keyword literals, never usable as names."""
    return frozenset(
        t.pattern.value
        for t in _parser().terminals
        if t.pattern.type == "str" and t.pattern.value.isidentifier()
    )


#: What the token budget counts: strings, names and numbers, any other visible character;
#: comments are skipped. It over-counts Lark's tokens a little (``1e-5`` is three), never under.
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"?|[A-Za-z0-9_.]+|[^\s]')
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")


def count_tokens(
    text: str, filename: str, budget: int, nesting: int, limit: int | None = None
) -> int:
    """The tokens of ``text`` (at most ``budget``, else E101 at the first one over), with
    brackets nested no deeper than ``nesting`` (else E101 at the bracket). ``limit``: the
    whole budget, for the message, when ``budget`` is what earlier files left of it.

    Why before Lark: the parser, its tree and the transformer cost 20–45 µs a token here, so a
    1 MB file of ``relu relu …`` took 10 s and half a million nested parentheses (which add
    no tree level) passed the nesting check; this scan stops at the budget, whatever the size.
    """
    count, depth = 0, 0
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok[0] == "#":
            continue
        count += 1
        problem = None
        if count > budget:
            problem = (
                f"more than {limit or budget:,} tokens in this spec and its imports",
                "split the network into blocks, or raise ODEDSL_MAX_TOKENS",
            )
        elif tok in _OPEN and depth + 1 > nesting:
            problem = (
                f"nesting deeper than {nesting} levels of brackets",
                "simplify the expression, or raise ODEDSL_MAX_NESTING",
            )
        elif len(tok) > MAX_NAME_CHARS and (tok[0].isalpha() or tok[0] == "_"):
            problem = (f"a name of {len(tok):,} characters", f"names have at most {MAX_NAME_CHARS}")
        if problem is not None:
            where = Span.at_offset(SourceFile(filename, text), m.start())
            raise DslError([Diagnostic("E101", problem[0], where, problem[1])])
        if tok in _OPEN:
            depth += 1
        elif tok in _CLOSE:
            depth = max(0, depth - 1)
    return count


def parse(text: str, filename: str | None = None, *, limits: Limits | None = None) -> ast.Module:
    """Parse one file's text into an :class:`ast.Module`; raise :class:`DslError` if malformed.
    The file alone may hold ``limits.max_tokens``."""
    return parse_counted(text, filename, limits=limits)[0]


def parse_counted(
    text: str,
    filename: str | None = None,
    *,
    limits: Limits | None = None,
    budget: int | None = None,
) -> tuple[ast.Module, int]:
    """:func:`parse`, and the tokens the file holds: the import loader shares
    ``limits.max_tokens`` among a spec's files, giving each what the others left (``budget``)."""
    if not isinstance(text, str):
        raise TypeError(f"parse takes a spec's text (str), got {type(text).__name__}")
    limits = limits or Limits.from_env()
    source = SourceFile(filename or "<string>", text)
    if _utf8_size_over(text, limits.max_spec_bytes):
        raise DslError(
            [
                Diagnostic(
                    "E101",
                    f"spec is larger than {limits.max_spec_bytes:,} bytes",
                    # 1:1 of a text not kept: the excerpt would split the huge text in lines
                    Span.at_start(SourceFile(source.name, "")),
                    "split it into files joined with `import`, or raise ODEDSL_MAX_SPEC_BYTES",
                )
            ]
        )
    nesting = min(limits.max_nesting, recursion_cap())
    tokens = count_tokens(
        text,
        source.name,
        limits.max_tokens if budget is None else budget,
        nesting,
        limits.max_tokens,
    )
    # a byte-order mark, as some editors save UTF-8, lexed as a space: positions and the
    # diagnostics' source text stay those of the file
    lexed = " " + text[1:] if text.startswith("\ufeff") else text
    try:
        tree = _parser().parse(lexed)
    except UnexpectedInput as exc:
        raise DslError([_syntax_diagnostic(exc, source)]) from None
    _check_nesting(tree, source, limits.max_nesting, recursion_cap())
    transformer = _ToAst(source)
    module = transformer.transform(tree)
    if transformer.problems:
        raise DslError(transformer.problems)
    return module, tokens


def _utf8_size_over(text: str, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` UTF-8 bytes, without encoding a huge text: each
    character takes 1 to 4 bytes, so only texts between limit/4 and limit characters are
    measured (and those are small)."""
    if len(text) > limit:
        return True
    if 4 * len(text) <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _syntax_diagnostic(exc: UnexpectedInput, source: SourceFile) -> Diagnostic:
    line = max(1, getattr(exc, "line", 1) or 1)
    col = max(1, getattr(exc, "column", 1) or 1)
    if isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        # lines as the lexer counts them (only "\n" ends one), so the span is in the file
        last = source.text.rstrip().split("\n")
        line, col = len(last), len(last[-1]) + 1
        expected = _expected_words(getattr(exc, "expected", set()))
        unclosed = _unclosed_hint(source.text)
        return Diagnostic(
            "E100",
            "unexpected end of file",
            Span(source, line, col, line, col + 1),
            f"expected {expected}; {unclosed}" if expected else unclosed,
        )
    if isinstance(exc, UnexpectedCharacters):
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else "?"
        if char == '"':  # no STRING token starts here: left open, or holding a backslash
            rest = source.text[exc.pos_in_stream + 1 :].split("\n", 1)[0]
            if '"' not in rest:
                return Diagnostic(
                    "E100",
                    "unterminated string",
                    Span(source, line, col, line, col + 1),
                    "a string ends on the line it starts on: add the closing '\"'",
                )
            if "\\" in rest[: rest.index('"')]:
                at = col + 1 + rest.index("\\")
                return Diagnostic(
                    "E100",
                    "a backslash in a string",
                    Span(source, line, at, line, at + 1),
                    "strings take no escapes or backslashes: write paths with '/'",
                )
        return Diagnostic(
            "E100",
            f"unexpected character {char!r}",
            Span(source, line, col, line, col + 1),
            "names are ASCII letters, digits and '_'; strings use double quotes",
        )
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    width = max(1, len(str(tok)))
    expected = _expected_words(exc.expected)
    hint = f"expected {expected}" if expected else None
    return Diagnostic(
        "E100", f"unexpected {_describe(tok)}", Span(source, line, col, line, col + width), hint
    )


def _unclosed_hint(text: str) -> str:
    """Name the innermost bracket left open (comments and strings skipped)."""
    stack: list[tuple[str, int, int]] = []
    line, col, i = 1, 0, 0
    pairs = {"}": "{", ")": "(", "]": "["}
    while i < len(text):
        ch = text[i]
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        elif ch == "#":
            while i + 1 < len(text) and text[i + 1] != "\n":
                i += 1
        elif ch == '"':
            while i + 1 < len(text) and text[i + 1] not in '"\n':
                i, col = i + 1, col + 1
            i, col = i + 1, col + 1
        elif ch in "{([":
            stack.append((ch, line, col))
        elif ch in pairs and stack and stack[-1][0] == pairs[ch]:
            stack.pop()
        i += 1
    if stack:
        ch, at_line, at_col = stack[-1]
        closer = {"{": "}", "(": ")", "[": "]"}[ch]
        return f"the '{ch}' at line {at_line}, column {at_col} is never closed: add '{closer}'"
    return "the file ends in the middle of a statement"


def _describe(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number {tok}"
    if tok.type == "STRING":
        return f"string {tok}"
    return f"'{tok}'"


def _expected_words(expected: set[str]) -> str:
    words = sorted({_TOKEN_WORDS.get(t, f"'{t.strip('_').lower()}'") for t in expected})
    if len(words) > 8:
        words = [*words[:8], "..."]
    return ", ".join(words)


#: Python frames the recursive passes (the transformer, the evaluator, the integrator
#: lowering) use per level of the syntax tree, with a margin: 2 to 3 were measured.
FRAMES_PER_LEVEL = 4


def recursion_cap() -> int:
    """The deepest tree this process can walk recursively from here without RecursionError.

    ``Limits.max_nesting`` can be raised at will (``ODEDSL_MAX_NESTING=100000``), but the
    passes after parsing recurse once per level: past this cap they would crash instead of
    reporting, so the cap wins, with an error that says so.
    """
    frame, used = sys._getframe(), 0
    while frame is not None:
        frame, used = frame.f_back, used + 1
    return max(8, (sys.getrecursionlimit() - used - 100) // FRAMES_PER_LEVEL)


def _check_nesting(tree: Tree, source: SourceFile, limit: int, cap: int | None = None) -> None:
    """Reject trees deeper than ``limit`` (or ``cap``) before any recursive pass walks them."""
    hint = "simplify the expression, or raise ODEDSL_MAX_NESTING"
    if cap is not None and cap < limit:
        limit = cap
        hint = (
            f"the recursion limit of this Python process ({sys.getrecursionlimit()}) allows "
            f"{cap} levels; simplify the expression, or raise it with sys.setrecursionlimit"
        )
    stack: list[tuple[Tree | Token, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if depth > limit:
            meta = node.meta
            line = getattr(meta, "line", 1)
            col = getattr(meta, "column", 1)
            raise DslError(
                [
                    Diagnostic(
                        "E101",
                        f"nesting deeper than {limit} levels",
                        Span(source, line, col, line, col + 1),
                        hint,
                    )
                ]
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def _span(source: SourceFile, meta: object) -> Span:
    line = getattr(meta, "line", 1)
    col = getattr(meta, "column", 1)
    return Span(
        source, line, col, getattr(meta, "end_line", line), getattr(meta, "end_column", col)
    )


def _tok_span(source: SourceFile, tok: Token) -> Span:
    return Span(
        source,
        tok.line or 1,
        tok.column or 1,
        tok.end_line or tok.line or 1,
        tok.end_column or (tok.column or 1) + len(tok),
    )


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """One method per grammar rule; each returns the rule's dataclass with its span."""

    def __init__(self, source: SourceFile):
        super().__init__()
        self.source = source
        self.problems: list[Diagnostic] = []

    def s(self, meta: object) -> Span:
        return _span(self.source, meta)

    # -- expressions
    def number(self, meta, tok):
        text = str(tok)
        span = _tok_span(self.source, tok)
        if len(text) > MAX_NUMBER_CHARS:
            # int() refuses more than 4300 digits (and is quadratic below that): report it
            self.problems.append(
                Diagnostic(
                    "E205",
                    f"number literal of {len(text):,} characters is too large",
                    span,
                    f"numbers in a spec have at most {MAX_NUMBER_CHARS} characters",
                )
            )
            return ast.Number(span, 0)
        value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
        if isinstance(value, float) and not math.isfinite(value):  # 1e999: never meant
            self.problems.append(
                Diagnostic(
                    "E205",
                    f"number {text} is too large (beyond floating point)",
                    span,
                    "numbers in a spec stay below 1.8e308",
                )
            )
            return ast.Number(span, 0)
        return ast.Number(span, value)

    def string(self, meta, tok):
        return ast.String(_tok_span(self.source, tok), str(tok)[1:-1])

    def true(self, meta):
        return ast.Bool(self.s(meta), True)

    def false(self, meta):
        return ast.Bool(self.s(meta), False)

    def var(self, meta, tok):
        return ast.Var(_tok_span(self.source, tok), str(tok))

    def call(self, meta, name, *args):
        return ast.Call(self.s(meta), str(name), tuple(a for a in args if a is not None))

    def _bin(op):
        def method(self, meta, left, right):
            return ast.BinOp(self.s(meta), op, left, right)

        return method

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")
    floordiv, mod, pow = _bin("//"), _bin("%"), _bin("^")

    def neg(self, meta, operand):
        return ast.UnaryOp(self.s(meta), "-", operand)

    def pos(self, meta, operand):
        return ast.UnaryOp(self.s(meta), "+", operand)

    # -- layers and blocks
    def kwarg(self, meta, name, value):
        return ast.Arg(self.s(meta), str(name), value)

    def args(self, meta, *items):
        return tuple(
            a if isinstance(a, ast.Arg) else ast.Arg(a.span, None, a)
            for a in items
            if a is not None
        )

    def layer_call(self, meta, name, args):
        return ast.LayerCall(self.s(meta), str(name), args or (), _tok_span(self.source, name))

    def layer_stmt(self, meta, call, alias):
        return ast.LayerStmt(self.s(meta), call, str(alias) if alias is not None else None)

    def layer_seq(self, meta, *layers):
        return ast.LayerSeq(self.s(meta), tuple(layers))

    def param(self, meta, name, type_, default):
        return ast.Param(
            self.s(meta), str(name), str(type_) if type_ is not None else None, default
        )

    def params(self, meta, *items):
        return tuple(p for p in items if p is not None)

    def block_decl(self, meta, name, params, body):
        return ast.BlockDecl(self.s(meta), str(name), params, body)

    # -- networks
    def input_decl(self, meta, kind, *dims):
        return ast.InputDecl(self.s(meta), str(kind), tuple(dims))

    def _section(kind):
        def method(self, meta, body):
            return ast.Section(self.s(meta), kind, body)

        return method

    stem_decl, transition_decl, head_decl = (
        _section("stem"),
        _section("transition"),
        _section("head"),
    )

    def _clause(keyword):
        def method(self, meta, name, args):
            return ast.Clause(
                self.s(meta), keyword, str(name), args or (), None, _tok_span(self.source, name)
            )

        return method

    integrator_clause = _clause("integrator")
    weights_clause = _clause("weights")
    backward_clause = _clause("backward")

    def step_clause(self, meta, value):
        return ast.Clause(self.s(meta), "step", None, (), value, None)

    def residual_clause(self, meta, *items):
        binds = str(items[0]) if len(items) == 2 else None
        return ast.ResidualClause(self.s(meta), binds, items[-1])

    def stage_decl(self, meta, name, depth, *items):
        clauses = tuple(i for i in items if isinstance(i, ast.Clause))
        residuals = tuple(i for i in items if isinstance(i, ast.ResidualClause))
        return ast.StageDecl(self.s(meta), str(name), depth, clauses, residuals)

    def network_decl(self, meta, name, params, *items):
        return ast.NetworkDecl(self.s(meta), str(name), params, tuple(items))

    # -- integrators
    def state_var(self, meta, name, init=None):
        return ast.StateVar(self.s(meta), str(name), init)

    def state_vars(self, meta, *items):
        return tuple(items)

    def split_channels(self, meta):
        return "split_channels"

    def two_step(self, meta):
        return "two_step"

    def assignment(self, meta, target, op, value):
        return ast.Assignment(self.s(meta), str(target), str(op), value)

    def start_block(self, meta, *body):
        return ast.StartBlock(self.s(meta), tuple(body))

    def integrator_decl(self, meta, name, state, *rest):
        params = tuple(p for p in rest if isinstance(p, ast.Param))
        options = {r for r in rest if isinstance(r, str)}
        starts = [r for r in rest if isinstance(r, ast.StartBlock)]
        for extra in starts[1:]:
            self.problems.append(
                Diagnostic(
                    "E240",
                    f"integrator '{name}' has two start blocks",
                    extra.span,
                    "state the first step once",
                )
            )
        body = tuple(r for r in rest if isinstance(r, ast.Assignment))
        return ast.IntegratorDecl(
            self.s(meta),
            str(name),
            state,
            params,
            "split_channels" in options,
            "two_step" in options,
            starts[0] if starts else None,
            body,
        )

    # -- files
    def import_decl(self, meta, path):
        return ast.ImportDecl(self.s(meta), str(path)[1:-1])

    def start(self, meta, *items):
        pick = lambda cls: tuple(i for i in items if isinstance(i, cls))  # noqa: E731
        span = self.s(meta) if items else Span.at_start(self.source)
        return ast.Module(
            span,
            pick(ast.ImportDecl),
            pick(ast.NetworkDecl),
            pick(ast.BlockDecl),
            pick(ast.IntegratorDecl),
        )
