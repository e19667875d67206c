"""DSL names that are not free in Python: the fx graphs are Python source, so a state variable
called ``lambda`` (a keyword) made ``def forward(self, lambda, h, t, call)`` a SyntaxError
traceback from ``odedsl check``, and one called ``call`` a duplicate argument (red-team,
2026-12-02). They now compile, and run as their plain-named twins."""

from __future__ import annotations

import pytest
import torch

import odedsl

TEMPLATE = """
integrator two(A, B) split channels {
    A += h * f(B, t)
    B -= h * g(A, t)
}
network n(depth: int = 4) {
    input vector[4]
    stage body = ode(depth) {
        integrator two
        backward invert
        residual f = { linear(2) tanh }
        residual g = { linear(2) }
    }
    head { linear(2) }
}
"""


@pytest.mark.parametrize(
    ("a", "b"), [("lambda", "def"), ("self", "call"), ("call", "call_"), ("None", "class")]
)
def test_python_keywords_and_graph_arguments_as_state_names(a: str, b: str) -> None:
    plain = odedsl.compile(TEMPLATE.replace("A", "p").replace("B", "q"), dtype=torch.float64)
    named = odedsl.compile(TEMPLATE.replace("A", a).replace("B", b), dtype=torch.float64)
    named.load_state_dict(plain.state_dict())
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(named(x), plain(x), rtol=0, atol=0)
    named(x).square().sum().backward()
    plain(x).square().sum().backward()
    for p, q in zip(named.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
