"""Mutated specs: nothing escapes but ``DslError``, every diagnostic is located, all fast.

Mutations (``mutate.py``) of generated valid specs: deleted / duplicated / swapped /
replaced tokens, numbers of up to 10⁶ digits, odd characters and line separators, nesting
around the limit, truncation, random bytes (invalid UTF-8 included). A mutant that is still
valid is fine; it is only validated, never compiled (a mutation may make it huge).

Default run: 200 file mutations + 60 byte mutations + 60 in-memory parses.
``pytest -m slow``: 10,000 + 1,000 + 1,000.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import odedsl
from odedsl.limits import Limits

from .harness import CHECK_BUDGET_S, load_checked, parse_checked, write_files
from .mutate import mutated_bytes, mutated_text
from .specgen import GeneratedSpec, valid_specs

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    # no explain phase: its line tracer slows checking tenfold and fakes time-budget failures
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    odedsl.load_spec(Path(__file__).parents[2] / "specs" / "resnet.ode")


@st.composite
def mutated_specs(draw, as_bytes: bool = False) -> tuple[GeneratedSpec, dict[str, str | bytes]]:
    gen = draw(valid_specs(max_stages=2))
    files: dict[str, str | bytes] = dict(gen.files)
    target = draw(st.sampled_from(sorted(files)))
    text = files[target]
    assert isinstance(text, str)
    files[target] = draw(mutated_bytes(text) if as_bytes else mutated_text(text))
    return gen, files


def check_mutant(gen: GeneratedSpec, files: dict[str, str | bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        texts = write_files(Path(tmp), files)
        out = load_checked(Path(tmp) / "main.ode", texts, **gen.overrides)
    assert out.cpu_s < CHECK_BUDGET_S, f"checking took {out.cpu_s:.2f} s"


@settings(FAST, max_examples=200)
@given(mutated_specs())
def test_mutated_specs_fail_cleanly(case: tuple[GeneratedSpec, dict[str, str | bytes]]) -> None:
    check_mutant(*case)


@settings(FAST, max_examples=60)
@given(mutated_specs(as_bytes=True))
def test_mutated_bytes_fail_cleanly(case: tuple[GeneratedSpec, dict[str, str | bytes]]) -> None:
    check_mutant(*case)


@settings(FAST, max_examples=60)
@given(valid_specs(max_stages=2).flatmap(lambda g: mutated_text(g.text, surrogates=True)))
def test_parse_of_any_text_fails_cleanly(text: str) -> None:
    """In memory, any code point (lone surrogates included) reaches the lexer."""
    out = parse_checked(text)
    assert out.cpu_s < CHECK_BUDGET_S


@settings(FAST, max_examples=30)
@given(valid_specs(max_stages=1), st.integers(1, 8))
def test_tight_limits_fail_cleanly(gen: GeneratedSpec, bound: int) -> None:
    """Every limit set very low: valid specs now hit limits, always with located errors."""
    limits = Limits(
        max_nesting=bound + 4,
        max_depth=bound,
        max_width=bound,
        max_spatial=bound,
        max_kernel=bound,
        max_parameters=bound * 10,
        max_block_expansion=bound,
        max_block_nesting=bound // 4,
        max_import_depth=bound // 8,
    )
    with tempfile.TemporaryDirectory() as tmp:
        texts = write_files(Path(tmp), gen.files)
        try:
            odedsl.load_spec(Path(tmp) / "main.ode", limits=limits, **gen.overrides)
        except odedsl.DslError as err:
            from .harness import check_error

            check_error(err, texts)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=10_000, derandomize=False)
@given(mutated_specs())
def test_mutated_specs_fail_cleanly_at_scale(
    case: tuple[GeneratedSpec, dict[str, str | bytes]],
) -> None:
    check_mutant(*case)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=1_000, derandomize=False)
@given(mutated_specs(as_bytes=True))
def test_mutated_bytes_fail_cleanly_at_scale(
    case: tuple[GeneratedSpec, dict[str, str | bytes]],
) -> None:
    check_mutant(*case)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FAST, max_examples=1_000, derandomize=False)
@given(valid_specs(max_stages=2).flatmap(lambda g: mutated_text(g.text, surrogates=True)))
def test_parse_of_any_text_fails_cleanly_at_scale(text: str) -> None:
    out = parse_checked(text)
    assert out.cpu_s < CHECK_BUDGET_S
