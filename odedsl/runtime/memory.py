"""Measuring activation memory: what a forward pass keeps alive for backward.

:func:`activation_bytes` counts, on any device, the bytes of the distinct storages autograd
packs during a forward (``saved_tensors_hooks`` see what built-in ops save and what a custom
Function saves with ``save_for_backward``), leaving out parameter storages.
:func:`cuda_activation_bytes` measures the allocator instead (peak during forward, less what
was allocated before), which also sees memory the hooks cannot (e.g. ctx attributes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn


def _storage_key(t: Tensor) -> tuple[str, int, int] | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None  # tensors without storage (sparse, fake)
    return (str(t.device), storage.data_ptr(), storage.nbytes())


def activation_bytes(
    fn: Callable[..., Any], *args: Any, params: Iterable[Tensor] | None = None, **kwargs: Any
) -> int:
    """Bytes of distinct storages saved for backward while running ``fn(*args, **kwargs)``.

    ``params`` (default: ``fn.parameters()`` when ``fn`` is a module) are excluded, as are
    any ``nn.Parameter`` packed directly. The output is dropped before returning.
    """
    if params is None and isinstance(fn, nn.Module):
        params = fn.parameters()
    excluded = {k for p in (params or ()) if (k := _storage_key(p)) is not None}
    seen: dict[tuple[str, int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key is not None and key not in excluded and not isinstance(t, nn.Parameter):
            seen[key] = key[2]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    del out
    return sum(seen.values())


def cuda_activation_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Peak CUDA memory allocated by a forward pass beyond what was allocated before it."""
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_activation_bytes needs a CUDA device; use activation_bytes")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn(*args, **kwargs)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return peak - before
