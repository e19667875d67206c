"""Per-stage tables the invert backward reads every layer, built once and validated cheaply.

Building the parameter list and the slot → parameter index map walks the whole module tree
(about 10 ms per call at N=1000 untied slots); a training step needs them in forward and
backward. :class:`StageTables` caches them together with a *snapshot* of the tree: for every
submodule, its ``_parameters``, ``_buffers`` and ``_modules`` dicts and the objects they held.
:meth:`StageTables.valid` compares identities and lengths only (no tree walk), so any change
that can alter the tables is seen: parameter or buffer replacement (``load_state_dict(...,
assign=True)``, ``module.weight = Parameter(...)``, ``.to()`` with parameter overwriting,
``functional_call``), submodule replacement, additions and deletions. In-place changes
(``.to(dtype)``/``.cuda()`` by default, ``load_state_dict`` copying) keep the objects, so the
tables stay valid and correct.
"""

from __future__ import annotations

from itertools import chain
from operator import is_
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage

SlotKey = tuple[str, int]


class StageTables:
    """``params`` (the invert Function's inputs), ``slot_index`` (indices of each slot's
    parameters), ``modules`` (residual name → its ModuleList; ``slots``: the same as lists),
    ``buffered`` (slots holding buffers, the only ones a
    :class:`~odedsl.runtime.replay.BufferGuard` must protect), ``sync_norms`` (the tree's
    ``SyncBatchNorm`` modules, whose process group invert's decisions are agreed over) and a
    memo of the parameter indices of a set of touched slots."""

    def __init__(self, stage: OdeStage) -> None:
        self.params: list[nn.Parameter] = list(stage.parameters())
        index = {id(p): i for i, p in enumerate(self.params)}
        self.modules: dict[str, nn.ModuleList] = {
            r: stage.get_submodule(r)  # type: ignore[misc]
            for r in stage.program.residuals
        }
        # the same slots as plain lists: indexing a ModuleList costs a few µs (index
        # normalisation), paid on every residual call
        self.slots: dict[str, list[nn.Module]] = {r: list(m) for r, m in self.modules.items()}
        self.slot_index: dict[SlotKey, list[int]] = {}
        self.buffered: set[SlotKey] = set()
        for r, mods in self.modules.items():
            for j, m in enumerate(mods):
                self.slot_index[(r, j)] = [index[id(p)] for p in m.parameters()]
                if any(True for _ in m.buffers()):
                    self.buffered.add((r, j))
        self._touched: dict[frozenset[SlotKey], list[int]] = {}
        self._tensors: dict[SlotKey, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        modules = list(stage.modules())
        self.sync_norms: list[nn.Module] = [
            m for m in modules if any(t.__name__ == "SyncBatchNorm" for t in type(m).__mro__)
        ]
        self._dicts = [d for m in modules for d in (m._parameters, m._buffers, m._modules)]
        self._lengths = list(map(len, self._dicts))
        self._values = list(chain.from_iterable(map(dict.values, self._dicts)))

    def valid(self) -> bool:
        """True while no parameter, buffer or submodule of the tree was added or replaced
        (identity and length comparisons in C iterators: about 1 µs per submodule)."""
        if list(map(len, self._dicts)) != self._lengths:
            return False
        current = chain.from_iterable(map(dict.values, self._dicts))
        return all(map(is_, current, self._values))

    def tensors_of(self, name: str, slot: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The named parameters and buffers of a slot (what a compiled residual takes)."""
        key = (name, slot)
        found = self._tensors.get(key)
        if found is None:
            module = self.modules[name][slot]
            found = (dict(module.named_parameters()), dict(module.named_buffers()))
            self._tensors[key] = found
        return found

    def indices_of(self, touched: set[SlotKey]) -> list[int]:
        """Sorted indices into :attr:`params` of the parameters of ``touched`` slots."""
        key = frozenset(touched)
        found = self._touched.get(key)
        if found is None:
            found = sorted({i for slot in key for i in self.slot_index[slot]})
            self._touched[key] = found
        return found
