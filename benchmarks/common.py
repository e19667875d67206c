"""Shared machinery of the benchmarks: residual functions, clocks, interleaved timing,
saved-tensor memory, gradient comparison, machine description, JSON and plots.

The measuring conventions are those of DESIGN.md §6:

* **time**: median of repeated training steps (forward, a fixed random linear loss,
  backward) after a warm-up step, as a ratio against the reference of the same group
  measured *in the same run*. Configurations are timed round-robin (one step of each per
  round), so a slow spell of a shared machine slows every configuration alike instead of
  whichever happened to run then. On CPU the default clock is the process CPU time: on a
  machine shared with other jobs, wall time measures the other jobs as much as ours, while
  CPU time of a single-threaded process does not (see :func:`configure_threads`).
* **memory**: bytes of the distinct storages a forward keeps for backward
  (``saved_tensors_hooks``, as :func:`odedsl.runtime.activation_bytes`) *plus* tensors that
  custom autograd Functions keep as ``ctx`` attributes (memcnn keeps its inputs and outputs
  that way; the hooks never see them). On CUDA, the allocator's peak over a whole training
  step, less what was allocated before it.
* **gradient error**: ‖g − g_ref‖ / ‖g_ref‖ over all parameter gradients and the input
  gradient, from identical initial weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from odedsl.cli.argtypes import (
    MAX_BATCH,
    MAX_SECONDS,
    MAX_SEED,
    MAX_SPATIAL,
    MAX_STEPS,
    MAX_THREADS,
    MAX_WIDTH,
    depth_in,
    int_in,
    out_folder,
    real_in,
    torch_device,
)
from odedsl.integrators import standard_library

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- command line
def add_run_options(p: argparse.ArgumentParser, *, depths: str, weights: str) -> None:
    """The options ``benchmarks.modes`` and ``benchmarks.peers`` share (the residual, sizes,
    timing, device, output), each with its bounds; ``None`` defaults are filled in by
    :func:`finish_run_options` from the script's own (``--quick``) table."""
    width, count = int_in(1, MAX_WIDTH), int_in(1, MAX_STEPS)
    p.add_argument("--quick", action="store_true", help="CI sizes (seconds)")
    p.add_argument("--depths", nargs="+", type=depth_in(), default=None, help=f"default {depths}")
    p.add_argument("--residual", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--activation", choices=("relu", "silu", "tanh"), default="relu")
    p.add_argument("--width", type=width, default=None, help="state width/channels (default 64)")
    p.add_argument("--hidden", type=width, default=None, help="residual hidden width (default 128)")
    p.add_argument(
        "--batch", type=int_in(1, MAX_BATCH), default=None, help="batch size (default 256)"
    )
    p.add_argument(
        "--size", type=int_in(1, MAX_SPATIAL), default=8, help="spatial size of the conv residual"
    )
    p.add_argument("--weights", choices=("tied", "untied"), default=weights)
    p.add_argument(
        "--gamma",
        type=real_in(0.0, 1.0, low_open=True),  # 0: no inverse
        default=0.9,
        help="momentum γ, in (0, 1]",
    )
    p.add_argument(
        "--unscaled",
        action="store_true",
        help="do not scale the residual of momentum/additive_coupling by 1/N (states explode)",
    )
    p.add_argument("--repeat", type=count, default=None, help="timed rounds (default 7)")
    p.add_argument("--min-repeat", type=count, default=None, help="rounds even over budget (3)")
    p.add_argument(
        "--budget",
        type=real_in(0.0, MAX_SECONDS),  # 0: --min-repeat rounds (what --quick times)
        default=None,
        help="timing seconds per depth (150)",
    )
    p.add_argument(
        "--grad-batch", type=int_in(1, MAX_BATCH), default=16, help="batch of the gradient check"
    )
    p.add_argument(
        "--threads",
        type=int_in(0, MAX_THREADS),
        default=1,
        help="torch threads (0: torch default)",
    )
    p.add_argument("--clock", choices=("cpu", "wall"), default=None, help="cpu on CPU, else wall")
    p.add_argument("--device", type=torch_device, default="cpu")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument("--out", type=out_folder, default=RESULTS, help="folder for JSON and PNG")
    p.add_argument("--no-plot", action="store_true")


def fill_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Set each option the user left at ``None`` to its default (the sizes a script's
    ``--quick`` changes are ``None`` in the parser so that an explicit value wins)."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def finish_run_options(
    args: argparse.Namespace, quick_depths: list[int], depths: list[int]
) -> None:
    """Fill the defaults :func:`add_run_options` left open: CI sizes under ``--quick``, and the
    clock (CPU time on the CPU, wall time on a GPU, whose kernels run asynchronously)."""
    quick = args.quick
    defaults = {
        "depths": quick_depths if quick else depths,
        "width": 8 if quick else 64,
        "hidden": 16 if quick else 128,
        "batch": 16 if quick else 256,
        "repeat": 1 if quick else 7,
        "min_repeat": 1 if quick else 3,
        "budget": 0.0 if quick else 150.0,
    }
    fill_defaults(args, defaults)
    if args.clock is None:
        args.clock = "wall" if args.device.startswith("cuda") else "cpu"


def check_split_width(
    parser: argparse.ArgumentParser, width: int, integrators: Iterable[str]
) -> None:
    """A usage error for an odd ``--width`` when one of ``integrators`` splits the state's
    channels in two (``hamiltonian``, ``additive_coupling``): the stage would raise on its
    first forward, after the benchmark had started."""
    library = standard_library()
    split = [i for i in dict.fromkeys(integrators) if library[i].split_channels]
    if split and width % 2:
        parser.error(
            f"--width {width}: {' and '.join(split)} split the state's channels in two halves, "
            "so the width must be even"
        )


# ----------------------------------------------------------------------------- machine
def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: leave torch's default) and return the count.

    The benchmarks default to one thread: with two cores shared with other jobs, a
    two-thread matmul waits at every barrier for whichever thread was descheduled, which
    makes wall *and* CPU times depend on the machine's load rather than on the method.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine_description(device: str) -> dict[str, Any]:
    """What the figures were measured on (CPU model, cores, load, versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
        "odedsl_revision": source_revision(),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def source_revision() -> str:
    """The commit measured, ``+dirty`` when ``odedsl/`` has uncommitted changes (the runtime
    changes under concurrent work; a figure without its revision cannot be reproduced)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "odedsl"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine_tag(device: str) -> str:
    """Short name for result files: ``cpu2`` (CPU with 2 cores) or the GPU's name."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name().split()[-1].lower().replace("/", "-")
    return f"cpu{os.cpu_count()}"


# ----------------------------------------------------------------------------- residuals
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class MLP(nn.Module):
    """``Linear(width, hidden) → activation → Linear(hidden, width)``: the residual function.

    ReLU by default, as in the ResNets the peers were written for. Not tanh: torch's CPU
    float32 tanh is not vectorised (about 6× the cost of a sigmoid here), so a tanh residual
    makes the forward pass, and hence every recomputing method, look dearer than the
    matrix products alone would.
    """

    def __init__(self, width: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvBlock(nn.Module):
    """``conv3×3 → activation → conv3×3`` at constant channels: the convolutional residual."""

    def __init__(self, channels: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.act = ACTIVATIONS[activation]()
        self.c2 = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c2(self.act(self.c1(x)))


class Scaled(nn.Module):
    """``scale · inner(x)``: the residual of integrators whose update has no step size.

    ``additive_coupling`` (x1 += F(x2)) and ``momentum`` (x += v) add the residual at full
    strength every layer; with a randomly initialised residual the state then grows
    geometrically (here |x| ≈ 3 → 10¹² after 1000 coupling layers, 10⁸ for momentum), and no
    inverse, exact or not, can reconstruct inputs drowned in the rounding of such values.
    Scaling by 1/N keeps them at the scale of the other integrators (x += h f(x)). Parameters
    are ``inner``'s, in the same order.
    """

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.inner(x)


STEP_FREE = ("additive_coupling", "momentum")


@dataclass(frozen=True)
class Residual:
    """Which residual function, at what sizes; ``width`` is the *state* width (channels)."""

    kind: str = "mlp"  # mlp | conv
    width: int = 64
    hidden: int = 128
    batch: int = 256
    size: int = 8  # spatial size of the conv residual
    activation: str = "relu"

    def module(self, width: int | None = None, scale: float | None = None) -> nn.Module:
        """A fresh residual acting on ``width`` features (half the state for split schemes),
        multiplied by ``scale`` when given (see :class:`Scaled`)."""
        w = self.width if width is None else width
        inner: nn.Module
        if self.kind == "mlp":
            inner = MLP(w, self.hidden, self.activation)
        elif self.kind == "conv":
            inner = ConvBlock(w, self.hidden, self.activation)
        else:
            raise ValueError(f"unknown residual kind {self.kind!r}")
        return inner if scale is None else Scaled(inner, scale)

    def input(
        self, batch: int | None = None, *, dtype: torch.dtype, device: str, seed: int = 0
    ) -> Tensor:
        b = self.batch if batch is None else batch
        shape = (b, self.width) if self.kind == "mlp" else (b, self.width, self.size, self.size)
        g = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=dtype).to(device)

    def describe(self) -> str:
        if self.kind == "mlp":
            return (
                f"MLP {self.width}→{self.hidden}→{self.width} ({self.activation}), "
                f"batch {self.batch}"
            )
        return (
            f"conv3×3 {self.width}→{self.hidden}→{self.width} ({self.activation}) on "
            f"{self.size}×{self.size}, batch {self.batch}"
        )


# ----------------------------------------------------------------------------- a measured thing
@dataclass
class Case:
    """One configuration: a module and how to run it on an input.

    ``forward(x)`` returns the output; the input handed to it is always a fresh non-leaf
    (``x.clone()`` of a leaf that requires grad), as a stage's input inside a network is:
    memcnn frees its input's storage, which would destroy a leaf input between steps.
    ``grads()`` returns the parameter gradients in a canonical order shared by every case of
    a group (layer by layer), so gradients of different implementations compare entry by entry.
    """

    name: str
    group: str
    module: nn.Module
    forward: Callable[[Tensor], Tensor]
    grads: Callable[[], list[Tensor | None]]
    reference: bool = False
    note: str = ""
    results: dict[str, Any] = field(default_factory=dict)

    def params(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def zero_grad(self) -> None:
        for p in self.module.parameters():
            p.grad = None


def loss_weight(like: Tensor, seed: int = 123) -> Tensor:
    """A fixed random cotangent: the loss is ``(out * weight).sum()``. Drawn in float64 and
    cast, so float32 and float64 runs of one case use the same loss (``randn`` draws
    different numbers per dtype)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(like.shape, generator=g, dtype=torch.float64)
    return w.to(dtype=like.dtype, device=like.device)


def train_step(case: Case, x: Tensor, weight: Tensor | None) -> Tensor:
    """Forward, the linear loss and backward; returns the output (detached)."""
    case.zero_grad()
    if x.grad is not None:
        x.grad = None
    out = case.forward(x.clone())
    w = weight if weight is not None else loss_weight(out)
    (out * w).sum().backward()
    return out.detach()


# ----------------------------------------------------------------------------- clocks and timing
class Clock:
    """``cpu``: process CPU time; ``wall``: ``perf_counter`` (CUDA synchronised)."""

    def __init__(self, kind: str, device: str) -> None:
        if kind not in ("cpu", "wall"):
            raise ValueError(f"clock must be cpu or wall, got {kind!r}")
        self.kind, self.cuda = kind, device.startswith("cuda")

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.process_time() if self.kind == "cpu" else time.perf_counter()


def time_round_robin(
    cases: Sequence[Case],
    x: Tensor,
    clock: Clock,
    *,
    repeat: int,
    min_repeat: int,
    budget_s: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Median-ready samples: one warm-up step per case, then rounds of one step per case.

    The number of rounds is ``repeat``, cut to fit ``budget_s`` (measured on the warm-up
    round) but never below ``min_repeat``.
    """
    weights: dict[str, Tensor] = {}
    t0 = time.perf_counter()
    for case in cases:  # warm-up (allocator, lazy init, first-call paths)
        out = train_step(case, x, None)
        weights[case.name] = loss_weight(out)
    warm = time.perf_counter() - t0
    rounds = max(min_repeat, min(repeat, int(budget_s / max(warm, 1e-9))))
    if progress:
        progress(f"warm-up {warm:.1f}s wall → {rounds} rounds")
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    for r in range(rounds):
        order = cases if r % 2 == 0 else list(reversed(cases))  # no fixed position bias
        for case in order:
            start = clock()
            train_step(case, x, weights[case.name])
            samples[case.name].append(clock() - start)
    return samples


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


# ----------------------------------------------------------------------------- memory
def _key(t: Tensor) -> tuple[str, int, int] | None:
    try:
        s = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    return (str(t.device), s.data_ptr(), s.nbytes())


def _tensors_in(value: Any, depth: int = 0) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, list | tuple) and depth < 4:
        for v in value:
            yield from _tensors_in(v, depth + 1)


def _ctx_tensors(out: Any) -> Iterator[Tensor]:
    """Tensors custom Functions of ``out``'s graph keep as ``ctx`` attributes."""
    roots = [t.grad_fn for t in _tensors_in(out) if t.grad_fn is not None]
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            for value in vars(node).values():
                yield from _tensors_in(value)
        stack.extend(n for n, _ in node.next_functions)


def saved_bytes(fn: Callable[[Tensor], Any], x: Tensor, params: Iterable[Tensor]) -> int:
    """Bytes of distinct storages a forward of ``fn(x)`` keeps alive for backward.

    Storages packed by autograd (built-in ops and ``save_for_backward``) as
    :func:`odedsl.runtime.activation_bytes` counts them, united with tensors held as
    attributes of custom Functions' ``ctx`` (sized after the forward, so storages a peer
    frees with ``resize_(0)`` count zero). Parameters are excluded.
    """
    excluded = {k for p in params if (k := _key(p)) is not None}
    seen: dict[tuple[int, str], int] = {}

    def add(t: Tensor) -> None:
        if isinstance(t, nn.Parameter):
            return
        k = _key(t)
        if k is not None and k not in excluded:
            seen[(k[1], k[0])] = max(seen.get((k[1], k[0]), 0), k[2])

    def pack(t: Tensor) -> Tensor:
        add(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x.clone())
    for t in _ctx_tensors(out):
        k = _key(t)
        if k is not None and k[2] == 0:  # freed by the peer: drop what the hooks saw
            seen.pop((k[1], k[0]), None)
        else:
            add(t)
    del out
    return sum(seen.values())


def cuda_step_bytes(case: Case, x: Tensor) -> int:
    """Peak CUDA memory of one training step beyond what was allocated before it."""
    case.zero_grad()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    train_step(case, x, None)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# ----------------------------------------------------------------------------- gradients
def flat_grads(case: Case, x: Tensor) -> list[Tensor]:
    """Parameter gradients (canonical order, zeros where unused) and the input gradient."""
    grads = [g if g is not None else torch.zeros((), device=x.device) for g in case.grads()]
    return [*grads, x.grad if x.grad is not None else torch.zeros_like(x)]


def relative_error(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """‖a − b‖ / ‖b‖ over the concatenation of tensors (shapes must match)."""
    if len(a) != len(b):
        raise ValueError(f"gradient lists differ in length: {len(a)} vs {len(b)}")
    num = sum(float((u.double() - v.double()).pow(2).sum()) for u, v in zip(a, b, strict=True))
    den = sum(float(v.double().pow(2).sum()) for v in b)
    if not math.isfinite(num):
        return math.inf
    return math.sqrt(num) / max(math.sqrt(den), 1e-300)


# ----------------------------------------------------------------------------- output
def result_tag(args: argparse.Namespace) -> str:
    """What a run's output files are named by: the machine, and ``-quick``/``-unscaled``."""
    tag = machine_tag(args.device) + ("-quick" if args.quick else "")
    return tag + ("-unscaled" if getattr(args, "unscaled", False) else "")


def write_partial(out: Path, name: str, argv: Sequence[str] | None, rows: list[Any]) -> Path:
    """The rows measured so far, after each depth, in ``<name>.partial.json`` (removed once
    the whole JSON is written): a run its time limit stops (a short GPU lease) keeps them."""
    path = out / f"{name}.partial.json"
    command = " ".join(sys.argv[1:] if argv is None else argv)
    write_json(path, {"complete": False, "command": command, "rows": rows})
    return path


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Strict JSON: non-finite floats (an exploded gradient error) become strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(payload), indent=1, default=str, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2f}×"


def fmt_err(x: float | None) -> str:
    if x is None:
        return "—"
    if not math.isfinite(x):
        return "inf"
    return "0" if x == 0 else f"{x:.1e}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot_groups(
    path: Path,
    groups: dict[str, dict[str, dict[int, tuple[float, float]]]],
    title: str,
) -> bool:
    """Small multiples: one column per group, saved bytes (top) and step time (bottom) against
    depth, log–log; ``groups[group][label][N] = (bytes, seconds)``.

    Returns ``False`` (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cols = min(len(groups), 5)
    bands = math.ceil(len(groups) / cols)  # a band = a memory row over a time row
    fig, axes = plt.subplots(2 * bands, cols, figsize=(3.4 * cols, 6.6 * bands), squeeze=False)
    for k, (group, series) in enumerate(groups.items()):
        band, j = divmod(k, cols)
        ax_m, ax_t = axes[2 * band][j], axes[2 * band + 1][j]
        for i, (label, points) in enumerate(series.items()):
            depths = sorted(points)
            style = {
                "color": f"C{i % 10}",
                "linestyle": "--" if "invert" in label or "memory-free" in label else "-",
                "marker": "o",
                "markersize": 3,
            }
            ax_m.plot(depths, [max(points[n][0], 1.0) for n in depths], label=label, **style)
            ax_t.plot(depths, [points[n][1] for n in depths], **style)
        ax_m.set_title(group, fontsize=9)
        ax_m.legend(fontsize=6, loc="upper left")
        for ax in (ax_m, ax_t):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.tick_params(labelsize=7)
        ax_t.set_xlabel("depth N", fontsize=8)
        if j == 0:
            ax_m.set_ylabel("saved activation bytes", fontsize=8)
            ax_t.set_ylabel("train step (s)", fontsize=8)
    for k in range(len(groups), bands * cols):  # empty cells of the last band
        band, j = divmod(k, cols)
        axes[2 * band][j].set_visible(False)
        axes[2 * band + 1][j].set_visible(False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
