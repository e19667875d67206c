"""Shared helpers of the example experiments: specs, data, a minimal training loop, output.

Every experiment is one script with a ``main(argv)`` that prints a table and writes
``examples/results/<name>.json`` and ``<name>.png`` (``--out`` elsewhere, ``--quick`` for a
CI-sized run). The figures carry a footer saying what they ran on: data, device, threads,
torch version and seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import odedsl
from odedsl.cli.argtypes import (
    MAX_SEED,
    MAX_THREADS,
    ScriptParser,
    int_in,
    json_record,
    out_folder,
    real_in,
    redraw,
)
from odedsl.runtime import OdeStage, expand_state_dict

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
RESULTS = Path(__file__).resolve().parent / "results"
DIGITS = {"channels": 1, "size": 8, "stride": 1}  # spec parameters for the 8×8 digits
TRAIN_IMAGES = 1438  # digits(): the training split (1438 train / 359 test)


# --------------------------------------------------------------------------- command line
# argparse types of the options several experiments share (a bad value: exit 2 naming it)
#: learning rates, flow times: finite and above 0
POSITIVE = real_in(0.0, math.inf, low_open=True)
#: fractional epochs; at most 10,000 (train() keeps every step's loss)
EPOCHS = real_in(0.0, 10_000.0, low_open=True)
#: seeds of weights, batch order and data draws (as ``odedsl train --seed``)
SEED = int_in(0, MAX_SEED)
#: train()'s minibatch on the digits: two images for BatchNorm's batch statistics, at most
#: the training set (a larger batch makes no full batch: an epoch that never ends)
TRAIN_BATCH = int_in(2, TRAIN_IMAGES)


def parser(doc: str, experiment: str) -> argparse.ArgumentParser:
    """The options every experiment has; ``doc`` is the script's docstring, whose first
    paragraph is the description (its first line alone stopped mid-sentence); ``experiment``
    is the name its records carry (the script's name), which ``--replot`` checks."""
    p = ScriptParser(description=" ".join(doc.split("\n\n")[0].split()))
    p.add_argument("--quick", action="store_true", help="CI-sized run (seconds, not minutes)")
    p.add_argument(
        "--out",
        type=out_folder,
        default=None,
        help="folder for the JSON and PNG (default results/, and results/quick/ for --quick)",
    )
    p.add_argument(
        "--threads",
        type=int_in(1, MAX_THREADS),
        default=1,
        help="torch intra-op threads (default 1)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument(
        "--replot",
        type=json_record("experiment", {experiment}, f"give a JSON that {experiment}.py wrote"),
        default=None,
        metavar="JSON",
        help="redraw the PNG of a saved run, next to the JSON or in --out",
    )
    return p


def replot(
    p: argparse.ArgumentParser, args: argparse.Namespace, plot: Callable[[dict, Path], None]
) -> dict | None:
    """``--replot results/x.json``: redraw ``results/x.png`` from the JSON, run nothing (the
    JSON was loaded and checked to be this experiment's by ``parser``); with ``--out DIR``,
    ``DIR/x.png`` instead, as a run writes there (a JSON in a folder one cannot write, or
    shipped results one means to keep, can then be redrawn elsewhere)."""
    if args.replot is None:
        return None
    path, record = args.replot
    if args.out is None:
        png = path.with_suffix(".png")
        elsewhere = "pass --out DIR, a folder you can write in"
    else:
        args.out.mkdir(parents=True, exist_ok=True)  # out_folder checked that it can be made
        png = args.out / f"{path.stem}.png"
        elsewhere = "pass another --out"
    redraw(p, "--replot", path, lambda: plot(record, png), elsewhere=elsewhere)
    print(f"wrote {png}")
    return record


def setup(args: argparse.Namespace) -> None:
    """Threads and the output folder: a ``--quick`` run's files go to ``results/quick/``
    (ignored by git), never over the full runs' that the README shows."""
    torch.set_num_threads(max(1, args.threads))
    if args.out is None:
        args.out = RESULTS / "quick" if args.quick else RESULTS
    args.out.mkdir(parents=True, exist_ok=True)


def machine(threads: int | None = None, device: str = "cpu") -> str:
    """What ran the experiment, for figures and JSON: device, threads, torch."""
    threads = torch.get_num_threads() if threads is None else threads
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"GPU ({torch.cuda.get_device_name()})"
    else:
        where = f"CPU ({platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"
    return f"{where}, torch {torch.__version__.split('+')[0]}"


# --------------------------------------------------------------------------- specs
def spec_text(name: str, *, weights: str | None = None, integrator: str | None = None) -> str:
    """The text of ``specs/<name>.ode`` with its imports inlined and, optionally, the
    ``weights``/``integrator`` clause of every stage replaced: the same network, compiled from
    text (``odedsl.compile`` resolves a text spec's imports against the working directory)."""
    text = (SPECS / f"{name}.ode").read_text()

    def inline(m: re.Match[str]) -> str:
        return (SPECS / m.group(1)).read_text()

    text = re.sub(r'^import "([^"]+)"\s*$', inline, text, flags=re.M)
    for key, value in (("weights", weights), ("integrator", integrator)):
        if value is None:
            continue
        text, n = re.subn(rf"^(\s*){key}\s+\S+", rf"\g<1>{key} {value}", text, flags=re.M)
        if n == 0:
            text, n = re.subn(r"(= ode\([^)]*\) \{\n)", rf"\g<1>        {key} {value}\n", text)
        if n == 0:
            raise ValueError(f"specs/{name}.ode: no stage to set `{key} {value}` in")
    return text


def compile_net(
    name: str,
    *,
    weights: str | None = None,
    integrator: str | None = None,
    backward: str | None = None,
    dtype: torch.dtype | None = None,
    **params: Any,
) -> nn.Module:
    if weights is None and integrator is None:
        source: str | Path = SPECS / f"{name}.ode"
    else:
        source = spec_text(name, weights=weights, integrator=integrator)
    return odedsl.compile(source, backward=backward, dtype=dtype, **params)


def stages(model: nn.Module) -> list[tuple[str, OdeStage]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, OdeStage)]


def set_backward(model: nn.Module, mode: str) -> None:
    for _, st in stages(model):
        st.backward_mode = mode


def convert(src: nn.Module, dst: nn.Module) -> dict[str, Tensor]:
    """``src``'s state dict rewritten for ``dst`` (same network, other weights in depth or
    depth): each stage's θ(s) evaluated at ``dst``'s slots (seed 000 §5.2: a tied network
    copied in depth), by ``odedsl.checkpoints.convert_state_dict`` (which also checks keys and
    shapes), else by the runtime's ``expand_state_dict``."""
    try:
        from odedsl.checkpoints import convert_state_dict
    except ImportError:  # an odedsl without the checkpoints module
        convert_state_dict = None
    if convert_state_dict is not None:
        return convert_state_dict(src, src.state_dict(), dst)
    state = dict(src.state_dict())
    dst_stages = dict(stages(dst))
    for name, s in stages(src):
        d = dst_stages[name]
        state = expand_state_dict(
            state,
            f"{name}.",
            s.program.residuals,
            (s.schedule, s.depth),
            (d.schedule, d.depth),
            s.program.offsets,
        )
    return state


# --------------------------------------------------------------------------- data
Data = tuple[Tensor, Tensor, Tensor, Tensor]


def digits() -> Data:
    """8×8 digits, standardised: (x_train, y_train, x_test, y_test), 1438/359, a fixed
    stratified split (``odedsl.training``'s when importable)."""
    try:
        from odedsl.training.data import digits as load
    except ImportError:
        load = None
    if load is not None:
        b = load()
        return b.train.images, b.train.labels, b.test.images, b.test.labels
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=gen)
    te, tr = perm[:359], perm[359:]
    mean, std = x[tr].mean(), x[tr].std()
    return (x[tr] - mean) / std, y[tr], (x[te] - mean) / std, y[te]


NOISE_SEED = 7  # the pixel noise is one draw, independent of the training seeds
#: its standard deviation, in units of the standardised pixels
NOISE = real_in(0.0, math.inf)


def add_noise_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--noise",
        type=NOISE,
        default=0.0,
        metavar="SIGMA",
        help="Gaussian pixel noise on train and test images (standardised units; default 0): "
        "a harder task than the plain digits",
    )


def noisy(data: Data, sigma: float) -> Data:
    """``data`` with N(0, σ²) added to every pixel of the training and test images (one
    fixed draw, the same in every run)."""
    if sigma == 0:
        return data
    x_tr, y_tr, x_te, y_te = data
    gen = torch.Generator().manual_seed(NOISE_SEED)

    def add(x: Tensor) -> Tensor:
        return x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)

    return add(x_tr), y_tr, add(x_te), y_te


def data_label(sigma: float) -> str:
    """How captions name the data set."""
    return f"8×8 digits + N(0, {sigma:g}²) pixel noise (one draw)" if sigma else "8×8 digits"


def result_name(experiment: str, sigma: float) -> str:
    """The JSON/PNG name of a run: a noisy run's beside the plain one's, not over it."""
    return experiment + (f"-noise{sigma:g}" if sigma else "")


# --------------------------------------------------------------------------- training
@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> float:
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = sum(
        int((model(xb.to(dev)).argmax(1).cpu() == yb).sum())
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True)
    )
    model.train(was)
    return correct / len(y)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: Tensor, batch: int = 256) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over ``x`` (train-
    mode forward passes, no gradients, no labels). After a tied network is copied to untied
    layers, each layer gets statistics of its own inputs instead of the tied module's blend of
    all layers' (with tied weights one BatchNorm serves every layer, so its running statistics
    average inputs that differ from layer to layer; eval mode then mis-normalises)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was = model.training
    model.train()
    dev = next(model.parameters()).device
    for xb in x.split(batch):
        model(xb.to(dev))
    for m, mom in zip(norms, saved, strict=True):
        m.momentum = mom
    model.train(was)


def train(
    model: nn.Module,
    data: Data,
    *,
    epochs: float,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    seed: int = 0,
    params: Iterable[nn.Parameter] | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Minimal loop: SGD (momentum 0.9, as seed 000 App. B) or AdamW, cosine schedule,
    cross-entropy; ``epochs`` may be fractional. Returns losses, accuracy and seconds."""
    x_tr, y_tr, x_te, y_te = data
    dev = next(model.parameters()).device
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=0.9, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(y_tr)
    per_epoch = n // batch_size
    total = max(1, round(epochs * per_epoch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    step = 0
    while step < total:
        order = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            if step >= total:
                break
            idx = order[b * batch_size : (b + 1) * batch_size]
            xb, yb = x_tr[idx].to(dev), y_tr[idx].to(dev)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if log is not None and step % per_epoch == 0:
                log({"step": step, "loss": losses[-1]})
    seconds = time.perf_counter() - t0
    return {
        "steps": total,
        "losses": losses,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "finite": all(math.isfinite(v) for v in losses),
        "test_accuracy": accuracy(model, x_te, y_te),
        "seconds": seconds,
    }


@torch.no_grad()
def dataset_loss(model: nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> float:
    """Mean cross-entropy over a whole set in eval mode: how far training got (the last
    minibatches' loss is noisier)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    total = sum(
        float(F.cross_entropy(model(xb.to(dev)), yb.to(dev), reduction="sum"))
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True)
    )
    model.train(was)
    return total / len(y)


# --------------------------------------------------------------------------- gradients
def grads(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Gradients of the mean cross-entropy on ``(x, y)`` for every trainable parameter."""
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    got = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {
        k: g if g is not None else torch.zeros_like(p) for (k, p), g in zip(named, got, strict=True)
    }


def relative(got: Sequence[Tensor], ref: Sequence[Tensor]) -> float:
    """‖got − ref‖ / ‖ref‖ over a list of tensors (one flattened vector)."""
    num = sum(float(((a - b).double() ** 2).sum()) for a, b in zip(got, ref, strict=True)) ** 0.5
    den = sum(float((b.double() ** 2).sum()) for b in ref) ** 0.5
    return num / den if den > 0 else float("nan")


def cosine(got: Sequence[Tensor], ref: Sequence[Tensor]) -> float:
    dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(got, ref, strict=True))
    na = sum(float((a.double() ** 2).sum()) for a in got) ** 0.5
    nb = sum(float((b.double() ** 2).sum()) for b in ref) ** 0.5
    return dot / (na * nb) if na > 0 and nb > 0 else float("nan")


def gradient_agreement(model: nn.Module, reference: nn.Module, x: Tensor, y: Tensor) -> dict:
    """Relative error and cosine of ``model``'s gradient against ``reference``'s (same weights
    loaded here), both in train mode on the identical batch."""
    reference.load_state_dict(model.state_dict())
    was = model.training
    model.train()
    reference.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    g_ref, g = grads(reference, x, y), grads(model, x, y)
    model.load_state_dict(buffers)  # the probe must not move BatchNorm running statistics
    model.train(was)
    keys = list(g_ref)
    return {
        "grad_error": relative([g[k] for k in keys], [g_ref[k] for k in keys]),
        "grad_cosine": cosine([g[k] for k in keys], [g_ref[k] for k in keys]),
    }


# --------------------------------------------------------------------------- numbers
def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (positive finite points only)."""
    pts = [
        (math.log(a), math.log(b))
        for a, b in zip(xs, ys, strict=True)
        if b > 0 and math.isfinite(b)
    ]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    k = len(s) // 2
    return s[k] if len(s) % 2 else 0.5 * (s[k - 1] + s[k])


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-markdown table (it reads well in a terminal too)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "–"
            return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in body)])


def write_json(path: Path, record: Mapping[str, Any]) -> Path:
    """``record`` as indented JSON, floats to 6 significant digits, non-finite as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.6g}") if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    text = json.dumps(clean(dict(record)), indent=2)
    # lists of plain numbers on one line each: a readable file of a sensible size
    text = re.sub(
        r"\[\s+((?:-?[\d.eE+-]+|null)(?:,\s+(?:-?[\d.eE+-]+|null))*)\s+\]",
        lambda m: "[" + " ".join(m.group(1).split()) + "]",
        text,
    )
    path.write_text(text + "\n")
    return path


def footer(fig: Any, text: str) -> None:
    """The 'what it ran on' line at the bottom of a figure."""
    fig.text(0.5, 0.005, text, ha="center", va="bottom", fontsize=7.5, color="0.35", wrap=True)


def save_figure(
    fig: Any, path: Path, caption: str, rect: tuple[float, float, float, float] = (0, 0.035, 1, 1)
) -> None:
    """Footer with ``caption``, tight layout within ``rect`` (room for the footer), save, close."""
    footer(fig, caption)
    fig.tight_layout(rect=rect)
    fig.savefig(path)
    pyplot().close(fig)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def env_record(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {
        "machine": machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": bool(args.quick),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        **extra,
    }
