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

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from operator import attrgetter, is_
from typing import TYPE_CHECKING

from torch import Tensor, nn

from odedsl.runtime.errors import ParametersModifiedError

if TYPE_CHECKING:
    from odedsl.runtime.stage import OdeStage

SlotKey = tuple[str, int]
#: FSDP2's per-module class (``fully_shard``) and FSDP1's wrapper, by name: importing
#: torch.distributed.fsdp to test against them would cost every import of the runtime
_FSDP_CLASSES = frozenset({"FSDPModule", "FullyShardedDataParallel"})
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_TRAINING = attrgetter("training")
_VERSION = attrgetter("_version")


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
        self.replayed: set[SlotKey] = set()
        for r, mods in self.modules.items():
            for j, m in enumerate(mods):
                self.slot_index[(r, j)] = [index[id(p)] for p in m.parameters()]
                if any(True for _ in m.buffers()):
                    self.buffered.add((r, j))
                    if any(_reads_buffers(sub) for sub in m.modules()):
                        self.replayed.add((r, j))
        self._touched: dict[frozenset[SlotKey], list[int]] = {}
        self._tensors: dict[SlotKey, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        named = list(stage.named_modules())
        modules = [m for _, m in named]
        self.sync_norms: list[nn.Module] = [
            m for m in modules if any(t.__name__ == "SyncBatchNorm" for t in type(m).__mro__)
        ]
        #: submodules FSDP shards on their own (the stage itself may be sharded: ``name`` "")
        self.sharded: list[str] = [n for n, m in named if n and _sharded(m)]
        #: tensors that take gradients without being registered parameters: FSDP1 with
        #: ``use_orig_params=False`` (its default) sets its flat parameter's views so (with
        #: ``True`` it registers the same views in ``_parameters`` too, which invert follows)
        self.unregistered: list[str] = [
            f"{n}.{k}" if n else k
            for n, m in named
            for k, v in vars(m).items()
            if isinstance(v, Tensor)
            and v.requires_grad
            and m._parameters.get(k) is not v
            and k not in _recomputed_by_pre_hooks(m)
        ]
        self._tree = modules
        self._dicts = [d for m in modules for d in (m._parameters, m._buffers, m._modules)]
        self._lengths = list(map(len, self._dicts))
        self._keys = list(chain.from_iterable(map(dict.keys, self._dicts)))
        self._values = list(chain.from_iterable(map(dict.values, self._dicts)))

    def valid(self) -> bool:
        """True while no parameter, buffer or submodule of the tree was added or replaced
        (identity and length comparisons in C iterators: about 1 µs per submodule)."""
        if list(map(len, self._dicts)) != self._lengths:
            return False
        current = chain.from_iterable(map(dict.values, self._dicts))
        return all(map(is_, current, self._values))

    def training_flags(self) -> list[bool]:
        """Each module's train/eval flag, in tree order (what :meth:`as_in_forward` restores)."""
        return list(map(_TRAINING, self._tree))

    def versions(self) -> list[int]:
        """The in-place version counter of each of :attr:`params`."""
        return list(map(_VERSION, self.params))

    def differs(self, training: list[bool]) -> bool:
        """Whether the tree differs from the forward that built these tables: a parameter,
        buffer or submodule replaced, or a train/eval flag other than ``training`` (one O(tree)
        walk; :class:`~odedsl.runtime.replay.ForwardRecord` asks once per backward)."""
        return not self.valid() or list(map(_TRAINING, self._tree)) != training

    @contextmanager
    def as_in_forward(self, training: list[bool]) -> Iterator[None]:
        """The tree as the forward that built these tables saw it, while a backward re-runs
        residuals: its parameters, buffers and submodules (``torch.func.functional_call``
        swaps them in for the forward call only; autograd differentiates the tensors the
        forward used) and each module's train/eval flag (``model.eval()`` between forward and
        backward). Everything is put back after."""
        current = [dict(d) for d in self._dicts] if not self.valid() else []
        if current:
            keys, values = iter(self._keys), iter(self._values)
            for d, n in zip(self._dicts, self._lengths, strict=True):
                d.clear()
                d.update((next(keys), next(values)) for _ in range(n))
        flipped = [m for m, t in zip(self._tree, training, strict=True) if m.training != t]
        for m in flipped:
            m.training = not m.training
        try:
            yield
        finally:
            for m in flipped:
                m.training = not m.training
            for d, was in zip(self._dicts, current, strict=False):
                d.clear()
                d.update(was)

    def check_versions(self, stage: OdeStage, versions: list[int], mode: str) -> None:
        """Raise :class:`ParametersModifiedError` when a parameter's version counter moved
        since ``versions`` (taken in the forward): one C-level list comparison when none did."""
        if self.versions() == versions:
            return
        i = next(
            i for i, (p, v) in enumerate(zip(self.params, versions, strict=True)) if p._version != v
        )
        names = {id(p): n for n, p in stage.named_parameters()}
        name = names.get(id(self.params[i]), f"parameter {i} of the stage")
        raise ParametersModifiedError(
            f"stage {stage.name!r}: {name} was modified in place between the forward and its "
            f"backward (an optimizer step, or an in-place edit, before backward()); {mode} "
            "re-runs the residuals in backward and would differentiate weights the forward "
            "did not use (store refuses it too, for every weight autograd saved)\n  hint: "
            "call backward() before changing the weights, or edit them out of place",
            stage=stage.name,
            parameter=name,
        )

    def tensors_of(self, name: str, slot: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The named parameters and buffers of a slot (what a compiled residual takes)."""
        key = (name, slot)
        found = self._tensors.get(key)
        if found is None:
            module = self.modules[name][slot]
            found = (dict(module.named_parameters()), dict(module.named_buffers()))
            self._tensors[key] = found
        return found

    def buffers_of(self, name: str, slot: int) -> list[Tensor]:
        """The buffers of a slot, in :meth:`torch.nn.Module.buffers` order."""
        return list(self.tensors_of(name, slot)[1].values())

    def indices_of(self, touched: set[SlotKey]) -> list[int]:
        """Sorted indices into :attr:`params` of the parameters of ``touched`` slots."""
        key = frozenset(touched)
        found = self._touched.get(key)
        if found is None:
            found = sorted({i for slot in key for i in self.slot_index[slot]})
            self._touched[key] = found
        return found


def _reads_buffers(module: nn.Module) -> bool:
    """Whether ``module`` has buffers of its own that its train-mode output may read. Batch
    and instance norms only write theirs in train mode (and each re-run's writes are undone),
    so they need no replay; anything else with buffers (spectral normalisation's power
    iteration reads what it updates) has its buffers replayed per call."""
    if isinstance(module, _NORMS) or not module._buffers:
        return False
    return any(b is not None for b in module._buffers.values())


def _sharded(module: nn.Module) -> bool:
    return any(t.__name__ in _FSDP_CLASSES for t in type(module).__mro__)


def _recomputed_by_pre_hooks(module: nn.Module) -> set[str]:
    """Attributes a forward pre-hook rebuilds from registered parameters on every call
    (``nn.utils.weight_norm``'s and ``spectral_norm``'s ``weight``, whose hooks carry the
    attribute's ``name``; ``nn.utils.prune``'s, whose hooks carry ``_tensor_name``): a re-run
    residual recomputes them, so invert's gradients reach the parameters behind them, unlike
    FSDP1's flat-parameter views."""
    return {
        name
        for hook in module._forward_pre_hooks.values()
        for attr in ("name", "_tensor_name")
        if isinstance(name := getattr(hook, attr, None), str)
    }
