"""Arithmetic on parameters: a tiny, total evaluator over the syntax tree's expressions.

Nothing is handed to Python's ``eval``: the evaluator knows numbers, booleans, strings, the
operators of the grammar and a closed set of functions, and it refuses values that would
make later stages allocate absurd amounts (huge integers, infinities, giant powers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from odedsl.diagnostics import Diagnostic, DslError, Span, did_you_mean
from odedsl.syntax import ast

Value = int | float | bool | str


@dataclass(frozen=True)
class Symbol:
    """A bare name used as a value (``init=zeros``): meaningful only to the layer that takes it."""

    name: str
    span: Span


#: Functions callable in parameter expressions, with their arity.
FUNCTIONS: dict[str, tuple[int, Callable[..., Value]]] = {
    "min": (2, min),
    "max": (2, max),
    "int": (1, lambda x: int(x)),
    "float": (1, lambda x: float(x)),
    "round": (1, lambda x: round(x)),
    "floor": (1, lambda x: math.floor(x)),
    "ceil": (1, lambda x: math.ceil(x)),
    "sqrt": (1, lambda x: math.sqrt(x)),
    "abs": (1, lambda x: abs(x)),
}

_MAX_ABS = 1e15  # larger magnitudes are never meaningful sizes or rates


class EvalError(Exception):
    """Raised with a diagnostic; callers collect it instead of stopping at the first."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _fail(code: str, message: str, span: Span, hint: str | None = None) -> EvalError:
    return EvalError(Diagnostic(code, message, span, hint))


def evaluate(expr: ast.Expr, env: Mapping[str, Value], *, symbols: bool = False) -> Value | Symbol:
    """Evaluate ``expr`` with parameter values ``env``.

    With ``symbols=True`` an unknown bare name evaluates to a :class:`Symbol` (for layer
    arguments such as ``init=zeros``); otherwise it is an unknown-name error.
    """
    if isinstance(expr, ast.Number):
        # the same bound as computed values: `1e300` is no more a size than `1e150 * 1e150`
        value = expr.value
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > _MAX_ABS:
            raise _fail("E205", "number too large", expr.span, "sizes and rates stay below 1e15")
        return expr.value
    if isinstance(expr, ast.Bool):
        return expr.value
    if isinstance(expr, ast.String):
        return expr.value
    if isinstance(expr, ast.Var):
        if expr.name in env:
            return env[expr.name]
        if symbols:
            return Symbol(expr.name, expr.span)
        hint = did_you_mean(expr.name, env) or (
            "declare it as a parameter of the network or block, before any default that uses it"
        )
        raise _fail("E200", f"unknown name '{expr.name}'", expr.span, hint)
    if isinstance(expr, ast.UnaryOp):
        value = _number(evaluate(expr.operand, env), expr.operand.span)
        return -value if expr.op == "-" else value
    if isinstance(expr, ast.BinOp):
        left = _number(evaluate(expr.left, env), expr.left.span)
        right = _number(evaluate(expr.right, env), expr.right.span)
        return _checked(_binop(expr, left, right), expr.span)
    if isinstance(expr, ast.Call):
        return _call(expr, env)
    raise _fail("E204", "not a value", expr.span)  # pragma: no cover - grammar is closed


def _number(value: Value | Symbol, span: Span) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = value.name if isinstance(value, Symbol) else repr(value)
        raise _fail(
            "E204",
            f"expected a number, got {shown}",
            span,
            "arithmetic and functions take numbers; true, false and strings cannot be operands",
        )
    return value


def _binop(expr: ast.BinOp, a: int | float, b: int | float) -> int | float:
    op = expr.op
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "//", "%"):
        if b == 0:
            raise _fail(
                "E206",
                "division by zero",
                expr.span,
                f"the right operand of '{op}' is 0 with these parameter values; "
                "keep it nonzero, e.g. max(1, n)",
            )
        if op == "/":
            return a / b
        return a // b if op == "//" else a % b
    # power: bounded so that `10 ^ 10 ^ 10` is an error, not a hang
    if abs(b) > 64 or (abs(a) > 1 and abs(b) * math.log10(abs(a)) > 15):
        raise _fail("E205", "power too large", expr.span, "sizes and rates stay below 1e15")
    if a == 0 and b < 0:
        raise _fail(
            "E206",
            "zero to a negative power",
            expr.span,
            "the base is 0 with these parameter values: use a nonzero base or an exponent ≥ 0",
        )
    result = a**b
    if isinstance(result, complex):
        raise _fail(
            "E206",
            "negative number to a fractional power",
            expr.span,
            "use a whole exponent, or a base ≥ 0, e.g. abs(x) ^ 0.5",
        )
    return result


def _checked(value: int | float, span: Span) -> int | float:
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > _MAX_ABS:
        raise _fail("E205", "value too large", span, "sizes and rates stay below 1e15")
    return value


def _call(expr: ast.Call, env: Mapping[str, Value]) -> Value:
    if expr.func not in FUNCTIONS:
        raise _fail(
            "E200", f"unknown function '{expr.func}'", expr.span, did_you_mean(expr.func, FUNCTIONS)
        )
    arity, fn = FUNCTIONS[expr.func]
    if len(expr.args) != arity:
        example = f"{expr.func}(a, b)" if arity == 2 else f"{expr.func}(x)"
        raise _fail(
            "E204",
            f"{expr.func}() takes {arity} argument(s), got {len(expr.args)}",
            expr.span,
            f"write {example}",
        )
    args = [_number(evaluate(a, env), a.span) for a in expr.args]
    if expr.func == "sqrt" and args[0] < 0:
        raise _fail(
            "E206",
            "square root of a negative number",
            expr.span,
            "the argument is below 0 with these parameter values: e.g. sqrt(abs(x))",
        )
    return _checked(fn(*args), expr.span)


def coerce(value: Value | Symbol, type_name: str, span: Span) -> Value:
    """Check a value against a declared parameter type (int, float, bool, str)."""
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _fail(
                "E204", f"expected an int, got {_show(value)}", span, _type_hint("int", value)
            )
        return value
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(
                "E204", f"expected a float, got {_show(value)}", span, _type_hint("float", value)
            )
        return float(value)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise _fail(
                "E204", f"expected a bool, got {_show(value)}", span, _type_hint("bool", value)
            )
        return value
    if type_name == "str":
        if not isinstance(value, str):
            raise _fail(
                "E204", f"expected a string, got {_show(value)}", span, _type_hint("str", value)
            )
        return value
    raise _fail("E204", f"unknown type '{type_name}'", span, did_you_mean(type_name, TYPES))


TYPES = ("int", "float", "bool", "str")


def _type_hint(type_name: str, value: object) -> str:
    """What to write for a value of ``type_name`` instead of ``value``."""
    if type_name == "int":
        if isinstance(value, float):
            return "write a whole number, or round it: int(x), round(x), floor(x) or ceil(x)"
        return "write a whole number, e.g. 8"
    if type_name == "float":
        return "write a number, e.g. 0.5"
    if type_name == "bool":
        return "write true or false"
    if isinstance(value, Symbol):
        return f'quote it: "{value.name}"'
    return 'write a string in double quotes, e.g. "name"'


def _show(value: object) -> str:
    if isinstance(value, Symbol):
        return f"the name '{value.name}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def raise_all(errors: list[EvalError]) -> None:
    if errors:
        raise DslError([e.diagnostic for e in errors])
