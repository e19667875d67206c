"""Export tests run tiny tensors: one intra-op thread (restored after each test), since
OpenMP spin-waiting on a loaded 2-core machine makes small ops many times slower."""

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
