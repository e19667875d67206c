"""The generated training script's integer options have the bounds of ``odedsl train``'s
(``odedsl.training.config.INT_BOUNDS``), written in as numbers at build time: the script
imports nothing of odedsl, and the two cannot drift apart."""

from __future__ import annotations

import ast
import importlib
from types import MappingProxyType

import pytest

from odedsl.export import render_files
from odedsl.spec.load import load_spec
from odedsl.training.config import INT_BOUNDS

from .helpers import CASES

#: The module (``odedsl.export.render`` as an attribute is the function the package exports).
render_module = importlib.import_module("odedsl.export.render")

#: Option of the generated script → the INT_BOUNDS entry it shares.
SHARED = {"--epochs": "epochs", "--batch-size": "batch_size", "--seed": "seed"}


def _integer_bounds(script: str) -> dict[str, tuple[int, int]]:
    """``--option`` → (low, high) of every ``add_argument(..., type=integer(low, high))``."""
    out = {}
    for node in ast.walk(ast.parse(script)):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
            continue
        kind = next((k.value for k in node.keywords if k.arg == "type"), None)
        if isinstance(kind, ast.Call) and getattr(kind.func, "id", None) == "integer":
            low, high = (
                eval(compile(ast.Expression(a), "<bound>", "eval"), {"__builtins__": {}})
                for a in kind.args
            )
            out[node.args[0].value] = (low, high)  # type: ignore[attr-defined]
    return out


def _script() -> str:
    return render_files(load_spec(CASES / "tiny.ode"))["train_tiny.py"]


def test_the_bounds_of_the_generated_script_are_int_bounds() -> None:
    script = _script()
    bounds = _integer_bounds(script)
    for option, name in SHARED.items():
        assert bounds[option] == INT_BOUNDS[name], option
    assert "odedsl" not in "".join(
        line for line in script.splitlines() if line.startswith(("import", "from"))
    )


def test_the_bounds_are_rendered_from_int_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other numbers in INT_BOUNDS, other numbers in the script (none is written by hand)."""
    changed = {"epochs": (3, 12_345), "batch_size": (4, 2**20 - 1), "seed": (7, 99)}
    monkeypatch.setattr(render_module, "INT_BOUNDS", MappingProxyType({**INT_BOUNDS, **changed}))
    script = _script()
    bounds = _integer_bounds(script)
    for option, name in SHARED.items():
        assert bounds[option] == changed[name], option
    assert "integer(4, 2**20 - 1)" in script and "integer(3, 12_345)" in script


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0"), (64, "64"), (9_999, "9999"), (65_535, "2**16 - 1"), (2**32 - 1, "2**32 - 1")],
)
def test_int_literal(n: int, text: str) -> None:
    assert render_module.int_literal(n) == text
    assert eval(text) == n
