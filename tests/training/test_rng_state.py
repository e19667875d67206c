"""The random streams a training checkpoint keeps, on a GPU (faked: the suite has none).

It kept every visible GPU's stream (``get_rng_state_all``) and put them all back: a resume on
a machine with fewer GPUs raised IndexError (reported as a checkpoint that "does not fit this
run"), and a run moved to another index read another GPU's stream. Now it keeps the training
GPU's stream alone and reads, from older checkpoints, the stream of the device it resumes on.
"""

from __future__ import annotations

import pytest
import torch

from odedsl.training import checkpoint


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, torch.device]]:
    calls: list[tuple[int, torch.device]] = []

    def get_state(device: torch.device) -> torch.Tensor:
        return torch.full((4,), device.index or 0, dtype=torch.uint8)

    def set_state(state: torch.Tensor, device: torch.device) -> None:
        calls.append((int(state[0]), device))

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "set_rng_state_all", lambda states: pytest.fail("every GPU's stream set")
    )
    return calls


def test_a_gpu_run_keeps_its_own_stream(fake_cuda: list[tuple[int, torch.device]]) -> None:
    state = checkpoint.rng_state(torch.device("cuda", 1))
    assert len(state["cuda"]) == 1 and int(state["cuda"][0][0]) == 1
    checkpoint.set_rng_state(state, torch.device("cuda", 1))
    assert fake_cuda == [(1, torch.device("cuda", 1))]


def test_an_older_checkpoint_of_four_gpus_resumes_on_one(
    fake_cuda: list[tuple[int, torch.device]],
) -> None:
    old = {
        "torch": torch.get_rng_state(),
        "cuda": [torch.full((4,), i, dtype=torch.uint8) for i in range(4)],
    }
    checkpoint.set_rng_state(old, torch.device("cuda"))
    checkpoint.set_rng_state(old, torch.device("cuda", 2))
    assert fake_cuda == [(0, torch.device("cuda")), (2, torch.device("cuda", 2))]


def test_a_cpu_run_reads_no_gpu_stream(fake_cuda: list[tuple[int, torch.device]]) -> None:
    state = checkpoint.rng_state(torch.device("cpu"))
    assert "cuda" not in state
    before = torch.get_rng_state()
    torch.rand(3)
    checkpoint.set_rng_state({**state, "torch": before, "cuda": [before]}, torch.device("cpu"))
    assert fake_cuda == [] and torch.equal(torch.get_rng_state(), before)
