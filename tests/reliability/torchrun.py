"""What the multi-process tests share: starting a worker under ``torchrun`` (two processes,
gloo, CPU) from the test, and ending one inside the worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]


def torchrun(worker: str, out: Path, timeout: float = 240) -> dict[str, Any]:
    """Run ``tests/reliability/<worker>`` in two processes; return what rank 0 saved."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tests" / "reliability" / worker),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


def finish(results: dict[str, object], out: Path) -> None:
    """Rank 0 saves ``results``; every rank waits for it and leaves the process group."""
    if dist.get_rank() == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()
    assert os.environ.get("LOCAL_RANK") is not None
