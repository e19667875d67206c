"""Mutations of valid specs: token edits, huge numbers, unicode, deep nesting, bytes, truncation.

Each mutation is a hypothesis strategy over a text (or bytes) so that failures shrink to a
small edit of a small spec. They are aimed at the front end's weak points: the lexer (odd
characters, line separators other than ``\\n``), the parser (missing / doubled tokens), the
converters (10⁶-digit numbers), the recursive passes (nesting), and the evaluator (powers).
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st

TOKEN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?|\"[^\"\n]*\"|#[^\n]*"
    r"|\s+|//|\+=|-=|.",
    re.S,
)
NUMBER = re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")

KEYWORDS = (
    "network block integrator import input stem transition head stage ode step weights "
    "backward residual as true false start split channels two_step"
).split()
PUNCT = "{ } ( ) [ ] , ; : = += -= + - * / // % ^ #".split()
NAMES = (
    "conv2d linear relu transpose batchnorm2d batchnorm1d pad_channels flatten euler heun "
    "rk4 hamiltonian midpoint leapfrog momentum additive_coupling reversible_heun f g h t x "
    "prev next tied untied shared interpolated store invert checkpoint image vector depth "
    "min max sqrt exp int float str bool"
).split()
NUMBERS = (
    "0 -1 1 2 0.0 1e308 1e309 1e-320 65536 65537 100000 100001 1000000000 2147483648 "
    "9999999999999999 .5 1e15 1e16 3.5"
).split()
STRINGS = ['"x"', '""', '"blocks.ode"', '"../x.ode"', '"/etc/passwd"', '"a\\\\b.ode"', '"x.txt"']
ODD_CHARS = [
    "\x00", "\r", "\r\n", "\x0c", "\x0b", "\t", "\u2028", "\u2029", "\x85", "\ufeff", "é",
    "𝟘", "ﬁ", "\u200b", "٣", "\x1c", "\\", '"', "'", "`", "$", "@", "?", "!", "~", "|", "&",
]  # fmt: skip
VOCAB = KEYWORDS + PUNCT + NAMES + NUMBERS + STRINGS + ODD_CHARS


def tokens(text: str) -> list[str]:
    """The text as a list of lexer-like pieces whose concatenation is the text."""
    return TOKEN.findall(text)


def _nest(kind: str, n: int, inner: str) -> str:
    if kind == "paren":
        return "(" * n + inner + ")" * n
    if kind == "neg":
        return "-" * n + inner
    if kind == "pow":
        return "2^" * n + inner
    if kind == "sum":
        return "1+" * n + inner
    if kind == "call":
        return "max(1, " * n + inner + ")" * n
    assert kind == "block"
    return "{" * n + inner + "}" * n


@st.composite
def token_edit(draw: Any, text: str) -> str:
    """Delete, duplicate, swap, replace or insert one token."""
    toks = tokens(text)
    if not toks:
        return text
    i = draw(st.integers(0, len(toks) - 1))
    op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert"]))
    if op == "delete":
        del toks[i]
    elif op == "duplicate":
        toks.insert(i, toks[i])
    elif op == "swap":
        j = draw(st.integers(0, len(toks) - 1))
        toks[i], toks[j] = toks[j], toks[i]
    elif op == "replace":
        toks[i] = draw(st.sampled_from(VOCAB))
    else:
        toks.insert(i, draw(st.sampled_from(VOCAB)) + draw(st.sampled_from(["", " "])))
    return "".join(toks)


@st.composite
def huge_number(draw: Any, text: str) -> str:
    """Replace a number by one of up to 10⁶ digits, or an overflowing float."""
    spots = list(NUMBER.finditer(text))
    digits = draw(st.sampled_from([16, 20, 400, 401, 4301, 10_000, 1_000_000]))
    big = draw(
        st.sampled_from(
            ["9" * digits, "1" + "0" * digits, "0" * digits + "1", "1e" + "9" * min(digits, 50)]
        )
    )
    big = big + draw(st.sampled_from(["", ".5", "e-400", ".0e+999"]))
    if not spots:
        return text + big
    m = draw(st.sampled_from(spots))
    return text[: m.start()] + big + text[m.end() :]


@st.composite
def deep_nesting(draw: Any, text: str) -> str:
    """Wrap a number (or a layer sequence) in n levels of nesting, n around the limit."""
    n = draw(st.sampled_from([2, 30, 63, 64, 65, 200, 5_000]))
    kind = draw(st.sampled_from(["paren", "neg", "pow", "sum", "call", "block"]))
    spots = list(NUMBER.finditer(text))
    if kind == "block" or not spots:
        i = text.find("{")
        if i < 0:
            return text + _nest(kind, n, "1")
        return text[: i + 1] + _nest("block", n, "relu") + text[i + 1 :]
    m = draw(st.sampled_from(spots))
    return text[: m.start()] + _nest(kind, n, m.group()) + text[m.end() :]


@st.composite
def insert_chars(draw: Any, text: str, surrogates: bool = False) -> str:
    """Insert odd characters (line separators, NUL, BOM, non-ASCII letters, any code point)."""
    pos = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        chunk = draw(st.sampled_from(ODD_CHARS))
    else:
        exclude = () if surrogates else ("Cs",)
        chunk = draw(st.text(st.characters(exclude_categories=exclude), min_size=1, max_size=4))
    return text[:pos] + chunk + text[pos:]


@st.composite
def truncate(draw: Any, text: str) -> str:
    return text[: draw(st.integers(0, len(text)))]


@st.composite
def mutated_text(draw: Any, text: str, surrogates: bool = False) -> str:
    """One to four mutations of ``text``."""
    for _ in range(draw(st.integers(1, 4))):
        how = draw(
            st.sampled_from(["token"] * 4 + ["number", "nest", "chars", "chars", "truncate"])
        )
        if how == "token":
            text = draw(token_edit(text))
        elif how == "number":
            text = draw(huge_number(text))
        elif how == "nest":
            text = draw(deep_nesting(text))
        elif how == "chars":
            text = draw(insert_chars(text, surrogates))
        else:
            text = draw(truncate(text))
    return text


@st.composite
def mutated_bytes(draw: Any, text: str) -> bytes:
    """The UTF-8 text with random bytes inserted or overwritten, or random bytes outright."""
    data = bytearray(text.encode("utf-8"))
    how = draw(st.sampled_from(["insert", "overwrite", "random", "prefix"]))
    if how == "random":
        return draw(st.binary(min_size=0, max_size=512))
    chunk = draw(st.binary(min_size=1, max_size=16))
    if how == "prefix":
        return bytes(chunk) + bytes(data)
    pos = draw(st.integers(0, len(data)))
    if how == "insert":
        data[pos:pos] = chunk
    else:
        data[pos : pos + len(chunk)] = chunk
    return bytes(data)
