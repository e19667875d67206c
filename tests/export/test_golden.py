"""Golden files pin the shape of the generated code for one small spec.

After an intended change of the templates or the renderer, regenerate them and review the diff:
``ODEDSL_REGEN_GOLDEN=1 python -m pytest tests/export/test_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from odedsl.export import render_files
from odedsl.spec.load import load_spec

from .helpers import CASES

GOLDEN = Path(__file__).with_name("golden")
REGEN = os.environ.get("ODEDSL_REGEN_GOLDEN", "") not in ("", "0")


@pytest.mark.parametrize("name", ["tiny.py", "train_tiny.py"])
def test_generated_code_matches_golden(name: str) -> None:
    text = render_files(load_spec(CASES / "tiny.ode"))[name]
    golden = GOLDEN / f"{name}.golden"
    if REGEN:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}: run with ODEDSL_REGEN_GOLDEN=1"
    expected = golden.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from {golden}; if intended, regenerate (see above)"


def test_golden_is_deterministic() -> None:
    spec = load_spec(CASES / "tiny.ode")
    assert render_files(spec) == render_files(spec)
