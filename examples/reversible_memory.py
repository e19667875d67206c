"""Seed 001 (Chang et al. 2018): reversible Hamiltonian, midpoint and leapfrog networks at
10, 100 and 1,000 layers per stage, activation memory flat in depth with ``backward invert``.

For each network and depth, in ``store`` (plain autograd) and ``invert`` (activations rebuilt
by the exact inverse step during backward) mode:

* activation memory: bytes of the distinct storages autograd saves during one training forward
  (``odedsl.runtime.activation_bytes``; on CUDA also the allocator's peak, ``--device cuda``);
* a few training steps on 8×8 digits batches (AdamW), with the median time per step after a
  warm-up step (process CPU time on CPU, as the benchmarks: on a shared machine wall time
  measures the other jobs too; wall time with synchronisation on CUDA), and the losses;
* at depths ≤ ``--gradcheck-max-depth``: the relative difference between the invert and the
  store gradient on the same batch and weights (exact inverses: float32 rounding only).

Sizes on CPU: digits are 1×8×8; ``hamiltonian.ode`` keeps the paper's widths (32/64/112, three
stages of ``depth`` blocks, so 3,000 reversible blocks at depth 1,000), ``midpoint.ode`` and
``leapfrog.ode`` run at ``--width 16`` (the specs' default is 32). ``--store-steps-1000``
limits the store-mode training steps at depth 1,000 (slow, memory hungry); ``0`` measures its
memory without training it.

The paper's GPU setting (the deepest Hamiltonian network, batch 128, 32×32 inputs) needs a GPU:
``--device cuda --size 32 --channels 3 --batch 128`` runs it on synthetic 3×32×32 images (CIFAR
is not available offline); it has not been run here.

    python examples/reversible_memory.py           # ~3.5 min CPU, 3.3 GiB peak RSS (in the JSON)
    python examples/reversible_memory.py --quick   # ~1 min: memory at 10/100/1000, 2 steps ≤ 100
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import _common as C
import torch
import torch.nn.functional as F
from torch import Tensor

from odedsl.cli.argtypes import (
    MAX_BATCH,
    MAX_SPATIAL,
    MAX_STEPS,
    MAX_WIDTH,
    depth_in,
    int_in,
    torch_device,
)
from odedsl.runtime import activation_bytes, cuda_activation_bytes

NETS = ("hamiltonian", "midpoint", "leapfrog")
MODES = ("store", "invert")


def peak_rss_bytes() -> int | None:
    """The process's peak resident memory so far (Linux and macOS; None elsewhere)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes vs KiB


def batches(args: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """Images and labels to draw training batches from."""
    if args.channels == 1 and args.size == 8:
        x, y, _, _ = C.digits()
    else:
        from odedsl.training.data import synthetic

        b = synthetic(channels=args.channels, size=args.size, n_train=max(1024, args.batch * 8))
        x, y = b.train.images, b.train.labels
    return x.to(device), y.to(device)


def build(name: str, depth: int, mode: str, args: Any, device: torch.device) -> torch.nn.Module:
    params: dict[str, Any] = {"depth": depth, "channels": args.channels, "size": args.size}
    if name != "hamiltonian":
        params["width"] = args.width
    return C.compile_net(name, backward=mode, **params).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device: torch.device) -> Callable[[], float]:
    """Process CPU time on CPU (one torch thread: what this process computed, whatever else
    the machine runs), wall time on CUDA (kernels run off the CPU; :func:`sync` first)."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def measure(
    name: str,
    depth: int,
    mode: str,
    steps: int,
    args: Any,
    data: tuple[Tensor, Tensor],
    device: torch.device,
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    net = build(name, depth, mode, args, device)
    net.train()
    x_all, y_all = data
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(y_all), generator=gen)
    x0 = x_all[idx[: args.batch]]
    row: dict[str, Any] = {"network": name, "depth": depth, "backward": mode}
    row["activation_bytes"] = activation_bytes(net, x0)
    if device.type == "cuda":
        row["cuda_activation_bytes"] = cuda_activation_bytes(net, x0)
    row["parameters"] = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr)
    times, losses = [], []
    now = clock(device)
    for s in range(steps):
        sel = idx[(s * args.batch) % len(idx) :][: args.batch]
        xb, yb = x_all[sel], y_all[sel]
        sync(device)
        t0 = now()
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        times.append(now() - t0)
        losses.append(float(loss.detach()))
    timed = times[1:] if len(times) > 1 else times
    row.update(
        steps=steps,
        trained=steps > 0,
        seconds_per_step=C.median(timed) if timed else None,
        step_seconds=times,
        losses=losses,
    )
    return row


def gradient_gap(
    name: str, depth: int, args: Any, data: tuple[Tensor, Tensor], device: torch.device
) -> float:
    """‖g_invert − g_store‖ / ‖g_store‖ on one batch, same weights, train mode."""
    torch.manual_seed(args.seed)
    ref = build(name, depth, "store", args, device)
    inv = build(name, depth, "invert", args, device)
    x, y = data[0][: args.batch], data[1][: args.batch]
    return C.gradient_agreement(inv, ref, x, y)["grad_error"]


def plot(record: dict, path: Any) -> None:
    plt = C.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.5, 5.0), dpi=120)
    colours = {"hamiltonian": "tab:blue", "midpoint": "tab:green", "leapfrog": "tab:red"}
    depths = record["depths"]
    for k, name in enumerate(record["networks"]):
        # invert lines of equal memory coincide: offset their dashes so every colour shows
        dashed = (4 * k, (6, 6))
        for mode, ls, mk in (("store", "-", "o"), ("invert", dashed, "s")):
            rows = [r for r in record["rows"] if r["network"] == name and r["backward"] == mode]
            kw = {"ls": ls, "marker": mk, "color": colours[name], "label": f"{name}, {mode}"}
            if mode == "invert":
                kw["mfc"] = "none"
            ax.loglog(
                [r["depth"] for r in rows], [r["activation_bytes"] / 2**20 for r in rows], **kw
            )
            pts = [r for r in rows if r["seconds_per_step"] is not None]
            if pts:
                bx.loglog([r["depth"] for r in pts], [r["seconds_per_step"] for r in pts], **kw)
    for a in (ax, bx):
        a.set_xticks(depths, [f"{d:,}" for d in depths])
        a.minorticks_off()
        a.grid(True, which="major", alpha=0.3)
        a.set_xlabel("layers (reversible blocks) per stage")
        a.legend(fontsize=8, ncol=2)
    ax.set_ylabel(f"activation memory (MiB), batch {record['batch']}")
    ax.set_title("(a) saved activations: linear in depth (store), flat (invert)", fontsize=10)
    cpu = record.get("device", "cpu") == "cpu"
    bx.set_ylabel(f"{'CPU' if cpu else 'wall'} seconds per training step (median)")
    bx.set_title(
        f"(b) time per training step (median of {max(1, record['steps'] - 1)} after a warm-up"
        + ("; process CPU time)" if cpu else ")"),
        fontsize=10,
    )
    fig.suptitle(
        "Seed 001: reversible Hamiltonian / midpoint / leapfrog networks, memory and time vs depth",
        fontsize=11,
    )
    C.save_figure(fig, path, record["caption"])


def main(argv: Sequence[str] | None = None) -> dict:
    p = C.parser(__doc__, "reversible_memory")
    p.add_argument("--networks", nargs="+", default=list(NETS), choices=list(NETS))
    step_count = int_in(0, MAX_STEPS)  # 0: memory only
    p.add_argument("--depths", type=depth_in(), nargs="+", default=[10, 100, 1000])
    p.add_argument(
        "--steps", type=step_count, default=None, help="training steps per run (default 5; quick 2)"
    )
    p.add_argument(
        "--store-steps-1000",
        type=step_count,
        default=None,
        help="store-mode training steps at depth ≥ 1000 (default: --steps; quick 0)",
    )
    p.add_argument(
        "--max-train-depth",
        type=depth_in(0),
        default=None,
        help="deeper runs only measure memory (default: all; quick 100)",
    )
    p.add_argument("--gradcheck-max-depth", type=depth_in(0), default=None)
    p.add_argument(
        "--batch",
        type=int_in(2, MAX_BATCH),  # BatchNorm trains: two images at least
        default=None,
        help="default 16 (quick 4; cuda 128)",
    )
    p.add_argument(
        "--width", type=int_in(1, MAX_WIDTH), default=None, help="midpoint/leapfrog (default 16)"
    )
    p.add_argument("--channels", type=int_in(1, MAX_WIDTH), default=1)
    p.add_argument("--size", type=int_in(1, MAX_SPATIAL), default=8)
    p.add_argument("--lr", type=C.POSITIVE, default=1e-3)
    p.add_argument("--seed", type=C.SEED, default=0)
    p.add_argument("--device", type=torch_device, default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    if "hamiltonian" in args.networks and args.size < 4:
        p.error(f"--size {args.size}: the hamiltonian network pools 2×2 twice, so 4 at least")
    if (done := C.replot(p, args, plot)) is not None:
        return done
    C.setup(args)
    device = torch.device(args.device)
    args.depths = sorted(args.depths)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 5)
    if args.store_steps_1000 is None:
        args.store_steps_1000 = 0 if args.quick else args.steps
    if args.max_train_depth is None:
        args.max_train_depth = 100 if args.quick else max(args.depths)
    if args.gradcheck_max_depth is None:
        args.gradcheck_max_depth = 10 if args.quick else 100
    args.batch = args.batch or (128 if device.type == "cuda" else 4 if args.quick else 16)
    if (args.channels, args.size) == (1, 8) and args.batch > C.TRAIN_IMAGES:
        p.error(f"--batch {args.batch}: the digits have {C.TRAIN_IMAGES} training images")
    args.width = args.width or (8 if args.quick else 16)
    data = batches(args, device)
    t0 = time.perf_counter()
    rows, gaps = [], []
    for name in args.networks:
        for depth in args.depths:
            for mode in MODES:
                steps = args.steps if depth <= args.max_train_depth else 0
                if mode == "store" and depth >= 1000:
                    steps = min(steps, args.store_steps_1000)
                row = measure(name, depth, mode, steps, args, data, device)
                rows.append(row)
                sps = row["seconds_per_step"]
                print(
                    f"  {name:11s} N={depth:<5d} {mode:6s}: activations "
                    f"{row['activation_bytes'] / 2**20:8.2f} MiB, "
                    + (f"{sps:.3f} s/step" if sps is not None else "not trained"),
                    flush=True,
                )
            if depth <= args.gradcheck_max_depth:
                gaps.append(
                    {
                        "network": name,
                        "depth": depth,
                        "grad_error": gradient_gap(name, depth, args, data, device),
                    }
                )
    seconds = time.perf_counter() - t0
    byte = {(r["network"], r["depth"], r["backward"]): r["activation_bytes"] for r in rows}
    lo, hi = args.depths[0], args.depths[-1]
    ratios = {
        name: {mode: byte[(name, hi, mode)] / byte[(name, lo, mode)] for mode in MODES}
        for name in args.networks
    }
    where = (
        "8×8 digits"
        if (args.channels, args.size) == (1, 8)
        else f"synthetic {args.channels}×{args.size}×{args.size}"
    )
    caption = (
        f"{where}, batch {args.batch}; hamiltonian widths 32/64/112 (3 stages), midpoint/"
        f"leapfrog width {args.width}; AdamW lr {args.lr:g}, {args.steps} steps (store at "
        f"1,000: {args.store_steps_1000}); seed {args.seed}; {C.machine(device=args.device)}"
    )
    record = C.env_record(
        args,
        experiment="reversible_memory",
        command="python examples/reversible_memory.py" + (" --quick" if args.quick else ""),
        networks=args.networks,
        depths=args.depths,
        batch=args.batch,
        width=args.width,
        channels=args.channels,
        size=args.size,
        steps=args.steps,
        store_steps_1000=args.store_steps_1000,
        device=args.device,
        seed=args.seed,
        rows=rows,
        memory_ratios=ratios,
        gradient_gaps=gaps,
        seconds=seconds,
        peak_rss_bytes=peak_rss_bytes(),
        caption=caption,
    )
    sps = {(r["network"], r["depth"], r["backward"]): r["seconds_per_step"] for r in rows}
    print(
        C.table(
            [
                "network",
                "N/stage",
                "store MiB",
                "invert MiB",
                "store s/step",
                "invert s/step",
                "invert/store time",
                "loss (invert) first → last",
            ],
            [
                [
                    name,
                    d,
                    byte[(name, d, "store")] / 2**20,
                    byte[(name, d, "invert")] / 2**20,
                    sps[(name, d, "store")] or "–",
                    sps[(name, d, "invert")] or "–",
                    (sps[(name, d, "invert")] / sps[(name, d, "store")])
                    if sps[(name, d, "invert")] and sps[(name, d, "store")]
                    else "–",
                    next(
                        (
                            f"{r['losses'][0]:.3f} → {r['losses'][-1]:.3f}"
                            for r in rows
                            if (r["network"], r["depth"], r["backward"]) == (name, d, "invert")
                            and r["losses"]
                        ),
                        "–",
                    ),
                ]
                for name in args.networks
                for d in args.depths
            ],
        )
    )
    print(
        f"memory ratio N={hi} / N={lo}: "
        + "; ".join(
            f"{n}: store {r['store']:.1f}×, invert {r['invert']:.4f}×" for n, r in ratios.items()
        )
    )
    if gaps:
        print(
            "invert vs store gradient (relative): "
            + ", ".join(f"{g['network']} N={g['depth']}: {g['grad_error']:.2g}" for g in gaps)
        )
    peak = record["peak_rss_bytes"]
    print(f"{seconds:.0f} s" + (f", peak resident memory {peak / 2**30:.2f} GiB" if peak else ""))
    out = args.out / ("reversible_memory" + ("_cuda" if device.type == "cuda" else ""))
    C.write_json(out.with_suffix(".json"), record)
    if not args.no_plot:
        plot(record, out.with_suffix(".png"))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
