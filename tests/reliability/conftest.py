"""Tiny tensors: one intra-op thread, restored after each test.

With several threads, OpenMP spin-waiting on a loaded machine makes tiny-tensor work many
times slower (see tests/runtime/conftest.py); the tensors are too small for threads to help.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
