"""Weights in depth: which copies of a residual function layer ``n`` uses at offset ``c``.

A stage keeps ``slots`` copies of each residual module. The weight schedule maps a layer and
an offset (time ``s = (n + c) / N`` in ``[0, 1]``) to a convex combination of slots, so that
every schedule is a function θ(s) of depth:

* ``tied``: one slot, θ(s) constant.
* ``untied``: one slot per layer. When the program reads a residual ahead of the layer's time
  (an offset > 0, e.g. Heun's corrector ``f(., t + h)``), the slots are the N + 1 nodes
  ``s_i = i / N`` and θ is linear between them (HeunNet, seed 000 eq. 8: the corrector uses
  θ_{n+1}). Otherwise there are N slots and layer n uses slot n whatever the offset, so the
  reverse Euler step at offset 1 uses θ_n exactly as seed 000 eq. 6 (for every schedule, an
  approximate inverse's calls resolve to offset 0 first in such a program:
  :func:`~odedsl.runtime.calls.replayed_offset`).
* ``shared(k)``: k groups, θ piecewise constant, group ``min(floor(s k), k - 1)``. Without
  positive offsets, as for untied, the group is the layer's own (``s = n / N``).
* ``interpolated(k)``: k control points at ``s_i = i / (k - 1)``, θ piecewise linear, so the
  same parameters run at any depth N (seed 000, Definition 1).

:func:`expand_state_dict` turns the weights of one schedule into those of another by
evaluating θ at the destination's slot times (seed 000 §5.2: start a deep untied network from a
trained tied one). It refuses a conversion after which the integrator would read other weights
than θ where it evaluates the residual: between two untied slots θ is blended linearly, so RK4's
t + h/2 gets θ back only where θ is linear between the two (never across the jump between
two shared(k) groups).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Mode = Literal["tied", "untied", "shared", "interpolated"]
Blend = tuple[tuple[int, float], ...]
_MODES = ("tied", "untied", "shared", "interpolated")
_EPS = 1e-9  # snapping tolerance for positions that should be integers


def _reads_ahead(offsets: Sequence[float]) -> bool:
    return any(c > _EPS for c in offsets)


def _blend(position: float, count: int) -> Blend:
    """Linear interpolation between integer nodes ``0..count-1`` at ``position``."""
    position = min(max(position, 0.0), count - 1.0)
    i = min(math.floor(position + _EPS), count - 1)
    w = position - i
    if w <= _EPS or i == count - 1:
        return ((i, 1.0),)
    if w >= 1.0 - _EPS:
        return ((i + 1, 1.0),)
    return ((i, 1.0 - w), (i + 1, w))


@dataclass(frozen=True)
class WeightSchedule:
    """How a stage's residual weights vary with depth (see the module docstring)."""

    mode: Mode = "tied"
    k: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"unknown weight schedule {self.mode!r}; expected one of {_MODES}")
        if self.mode in ("shared", "interpolated"):
            low = 1 if self.mode == "shared" else 2
            if self.k is not None and (not isinstance(self.k, int) or isinstance(self.k, bool)):
                raise TypeError(f"weights {self.mode}(k) needs an integer k >= {low}: {self.k!r}")
            if self.k is None or self.k < low:
                raise ValueError(f"weights {self.mode}(k) needs an integer k >= {low}: {self.k}")
        elif self.k is not None:
            raise ValueError(f"weights {self.mode} takes no k (got k={self.k})")

    def __str__(self) -> str:
        return self.mode if self.k is None else f"{self.mode}({self.k})"

    def slots(self, depth: int, offsets: Sequence[float] = (0.0,)) -> int:
        """Number of residual copies a stage of ``depth`` layers with these offsets creates."""
        _check_depth(depth)
        if self.mode == "tied":
            return 1
        if self.mode == "untied":
            return depth + 1 if _reads_ahead(offsets) else depth
        assert self.k is not None
        return self.k

    def lookup(self, n: int, c: float, depth: int, offsets: Sequence[float] = (0.0,)) -> Blend:
        """Slots and weights (summing to 1) for layer ``n`` at offset ``c``.

        ``offsets`` are the program's forward offsets; they matter only for ``untied`` and
        ``shared``, which are layer-wise unless some offset reads ahead (see module docstring).
        """
        _check_depth(depth)
        if not 0 <= n < depth:
            raise ValueError(f"layer {n} outside a stage of depth {depth}")
        if not -_EPS <= c <= 1.0 + _EPS:
            raise ValueError(f"offset {c} outside [0, 1]")
        c = min(max(c, 0.0), 1.0)
        ahead = _reads_ahead(offsets)
        if self.mode == "tied":
            return ((0, 1.0),)
        if self.mode == "untied":
            return _blend(n + c, depth + 1) if ahead else ((n, 1.0),)
        assert self.k is not None
        if self.mode == "shared":
            s = (n + c) / depth if ahead else n / depth
            return ((min(math.floor(s * self.k + _EPS), self.k - 1), 1.0),)
        return _blend((n + c) * (self.k - 1) / depth, self.k)

    def slot_times(self, depth: int, offsets: Sequence[float] = (0.0,)) -> tuple[float, ...]:
        """The depth ``s`` each slot stands for (its node, or the start of its interval)."""
        count = self.slots(depth, offsets)
        if self.mode == "tied":
            return (0.0,)
        if self.mode == "untied":
            return tuple(i / depth for i in range(count))
        if self.mode == "shared":
            return tuple(i / count for i in range(count))
        return tuple(i / (count - 1) for i in range(count))

    def at(self, s: float, depth: int, offsets: Sequence[float] = (0.0,)) -> Blend:
        """θ(s): the slots a stage of ``depth`` layers blends at depth ``s`` in ``[0, 1]``."""
        n = min(math.floor(s * depth + _EPS), depth - 1)
        return self.lookup(n, min(max(s * depth - n, 0.0), 1.0), depth, offsets)


def _check_depth(depth: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise TypeError(f"stage depth must be a positive integer, got {depth!r}")
    if depth < 1:
        raise ValueError(f"stage depth must be a positive integer, got {depth!r}")


#: ``odedsl.Limits.max_depth``'s default; the runtime carries no front end (standalone export),
#: so it reads the same environment variable itself.
DEFAULT_MAX_DEPTH = 100_000


def limit_from_text(raw: str) -> int | None:
    """An ``ODEDSL_MAX_*`` value: 1 to 100 ASCII digits (surrounding blanks allowed), else
    ``None``: the rule of :func:`odedsl.limits.limit_from_text`, kept here because the
    runtime carries no front end (standalone export) and the front end no torch (a test
    holds the two to the same answers)."""
    text = raw.strip()
    if 1 <= len(text) <= 100 and text.isascii() and text.isdigit():
        return int(text)
    return None


def depth_limit() -> int:
    """The largest stage depth (``set_depth``, ``expand_state_dict``): ``ODEDSL_MAX_DEPTH``
    when :func:`limit_from_text` reads a number ≥ 1 there (the front end refuses anything
    else, naming the variable), else the default."""
    value = limit_from_text(os.environ.get("ODEDSL_MAX_DEPTH", ""))
    return value if value is not None and value >= 1 else DEFAULT_MAX_DEPTH


def _check_target(name: str, pair: tuple[WeightSchedule, int]) -> None:
    """``src``/``dst`` of :func:`expand_state_dict`: a schedule and a depth within the limit
    (checked before anything is allocated: an untied depth of 10^9 is 10^9 slots)."""
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], WeightSchedule)):
        raise TypeError(f"{name} must be a (WeightSchedule, depth) pair, got {pair!r}")
    schedule, depth = pair
    _check_depth(depth)
    limit = depth_limit()
    for what, size in (("depth", depth), (f"{schedule}: k", schedule.k or 0)):
        if size > limit:
            raise ValueError(
                f"{name} {what} {size} exceeds the limit of {limit} "
                "(raise it with ODEDSL_MAX_DEPTH)"
            )


def _check_conversion(src: tuple[WeightSchedule, int], dst: tuple[WeightSchedule, int]) -> None:
    (s, n_src), (d, n_dst) = src, dst
    if s == d and n_src == n_dst:
        return
    why = None
    if s.mode == "tied":
        return  # a constant θ is every schedule's special case
    if d.mode in ("tied", "shared"):
        why = f"{d} cannot hold the depth-varying weights of {s} without losing them"
    elif d.mode == "interpolated":
        assert d.k is not None
        if s.mode != "interpolated":
            why = f"piecewise-constant {s} weights are not piecewise linear in depth"
        elif (d.k - 1) % (s.k - 1):  # type: ignore[operator]
            why = f"interpolated({d.k}) control points do not refine interpolated({s.k})"
    elif s.mode == "untied" and n_dst < n_src:
        why = f"untied depth {n_src} -> {n_dst} would drop layers; only deepening is supported"
    if why:
        raise ValueError(
            f"cannot convert weights {s} (depth {n_src}) to {d} (depth {n_dst}): {why}"
        )


def _heaviest(blend: Blend) -> int:
    """The slot whose buffers a blend reads (the first of equal weights, as the runtime)."""
    return max(blend, key=lambda b: b[1])[0]


def _where(n: int, c: float, depth: int) -> str:
    return f"layer {n}, t + {c:g}·h (s = {(n + c) / depth:.4g})"


def _inexact(
    src: tuple[WeightSchedule, int],
    dst: tuple[WeightSchedule, int],
    offsets: Sequence[float],
    buffers: bool,
) -> str | None:
    """Why the converted weights would not be the source's wherever the integrator evaluates
    the residual (layer ``n``, offset ``c`` of ``offsets``), or ``None`` when they would.

    Why: each destination slot holds θ at its own time, and the runtime blends slots linearly
    in between; an integrator reading weights between two slots (RK4's t + h/2) then got a
    chord, not θ: a shared(k) net, or an interpolated(k) net with a control point inside a
    layer, converted to untied computed another function (outputs 0.02 to 0.09 off in a test
    net). Buffers (``buffers``: the residuals have some) are read from a blend's heaviest
    slot, not blended, so the slot a destination blend reads them from must hold the source's
    heaviest one.
    """
    (s, n_src), (d, n_dst) = src, dst
    if s.mode == "tied" or (s == d and (n_src == n_dst or s.mode == "interpolated")):
        return None  # the same θ (interpolated(k) is one at every depth)
    made = [s.at(t, n_src, offsets) for t in d.slot_times(n_dst, offsets)]
    for c in sorted(set(offsets)):
        for n in range(n_dst):
            if n_src == n_dst:  # as the source network itself looks it up
                want = dict(s.lookup(n, c, n_dst, offsets))
            else:
                want = dict(s.at(min((n + c) / n_dst, 1.0), n_src, offsets))
            blend = d.lookup(n, c, n_dst, offsets)
            got: dict[int, float] = {}
            for j, w in blend:
                for i, v in made[j]:
                    got[i] = got.get(i, 0.0) + w * v
            if any(abs(got.get(i, 0.0) - want.get(i, 0.0)) > _EPS for i in {*got, *want}):
                return (
                    f"the integrator evaluates the residual at {_where(n, c, n_dst)}, between "
                    f"two {d} slots, which are blended linearly, and {s}'s θ(s) is not linear there"
                )
            heavy, source = _heaviest(made[_heaviest(blend)]), _heaviest(tuple(want.items()))
            if buffers and heavy != source:
                return (
                    "buffers (BatchNorm's running statistics) are read from a blend's heaviest "
                    f"slot, not blended, and at {_where(n, c, n_dst)} the converted network "
                    f"would read those of source slot {heavy}, the source those of slot {source}"
                )
    return None


def _is_buffer(local: str, buffers: Collection[str] | None, value: Tensor) -> bool:
    if buffers is not None:
        return local in buffers
    leaf = local.rsplit(".", 1)[-1]
    return not value.is_floating_point() or leaf.startswith("running_")


def expand_state_dict(
    state_dict: Mapping[str, Tensor],
    prefix: str,
    residual_names: Sequence[str],
    src: tuple[WeightSchedule, int],
    dst: tuple[WeightSchedule, int],
    offsets: Sequence[float] = (0.0,),
    buffers: Collection[str] | None = None,
) -> dict[str, Tensor]:
    """Convert a stage's weights from schedule/depth ``src`` to ``dst`` by evaluating θ(s).

    Keys ``{prefix}{residual}.{slot}.{local}`` are rewritten for the destination slots; other
    keys pass through. Parameters are blended per :meth:`WeightSchedule.at` at each destination
    slot's time; buffers (``buffers``: local names, default: non-float tensors and
    ``running_*``, i.e. BatchNorm statistics) are copied from the heaviest source slot.
    Raises ``ValueError`` for conversions that would lose information, and for those after which
    a residual evaluation at one of ``offsets`` (the program's) would read other weights or
    buffers than the source's there (RK4's t + h/2 from shared(k) to untied).
    """
    _check_target("src", src)
    _check_target("dst", dst)
    _check_conversion(src, dst)
    (s_sched, n_src), (d_sched, n_dst) = src, dst
    n_in = s_sched.slots(n_src, offsets)
    out: dict[str, Tensor] = {}
    per_res: dict[str, dict[int, dict[str, Tensor]]] = {r: {} for r in residual_names}
    for key, value in state_dict.items():
        owner = next((r for r in residual_names if key.startswith(f"{prefix}{r}.")), None)
        if owner is None:
            out[key] = value
            continue
        slot, _, local = key[len(prefix) + len(owner) + 1 :].partition(".")
        if not slot.isdigit() or int(slot) >= n_in:
            raise ValueError(f"{key!r}: expected slot < {n_in} for {s_sched} at depth {n_src}")
        per_res[owner].setdefault(int(slot), {})[local] = value
    for r, slots in per_res.items():
        if len(slots) != n_in:
            raise ValueError(f"residual {r!r}: found {len(slots)} slots, {s_sched} needs {n_in}")
    has_buffers = any(
        _is_buffer(local, buffers, value)
        for slots in per_res.values()
        for one in slots.values()
        for local, value in one.items()
    )
    why = _inexact(src, dst, offsets, has_buffers)
    if why:
        raise ValueError(
            f"cannot convert weights {s_sched} (depth {n_src}) to {d_sched} (depth {n_dst}) "
            f"exactly: {why}"
        )
    for r, slots in per_res.items():
        for j, s in enumerate(d_sched.slot_times(n_dst, offsets)):
            blend = s_sched.at(s, n_src, offsets)
            heavy = _heaviest(blend)
            for local, value in slots[heavy].items():
                if _is_buffer(local, buffers, value):
                    mixed = value.clone()
                else:
                    mixed = sum((w * slots[i][local] for i, w in blend), torch.zeros_like(value))
                out[f"{prefix}{r}.{j}.{local}"] = mixed
    return out
