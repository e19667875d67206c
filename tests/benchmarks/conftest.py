"""Make the repository root importable, so the tests can import the ``benchmarks`` package
whichever way pytest was started (``python -m pytest`` adds the working directory,
a bare ``pytest`` does not)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
