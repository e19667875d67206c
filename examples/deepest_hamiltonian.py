"""Seed 001's GPU claim: the deepest Hamiltonian network that trains at batch 128 on 32×32
inputs, with ``backward store`` (plain autograd) against ``backward invert``.

``specs/hamiltonian.ode`` (three stages of widths 32/64/112, ``depth`` reversible blocks per
stage; Hamiltonian-74 at depth 6) on synthetic 3×32×32 images (CIFAR-10 cannot be fetched
offline; memory and time do not depend on the pixels). For each mode the depth per stage
doubles from ``--start`` until one of:

* the network does not fit: CUDA out of memory (the allocator's limit), or on CPU the saved
  activations exceed ``--memory-cap-mib`` (an explicit cap, so the search ends on any machine);
* a training step takes longer than ``--step-budget`` seconds (the depth is then reported as
  trained, and deeper ones as not tried: time, not memory, ended the search);
* ``--max-depth`` or the whole run's ``--budget`` is reached.

Each depth that fits trains ``--steps`` AdamW steps; reported per depth: parameters, saved
activations (``odedsl.runtime.activation_bytes``), on CUDA the allocator's peak during a step
minus the parameters, optimizer state and gradients, and the median seconds per step.

    python examples/deepest_hamiltonian.py --device cuda    # the paper's setting on a GPU
    python examples/deepest_hamiltonian.py --quick          # CPU, tiny, with a memory cap
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as C
import torch
import torch.nn.functional as F

from odedsl.cli.argtypes import (
    MAX_BATCH,
    MAX_SECONDS,
    MAX_SPATIAL,
    MAX_STEPS,
    depth_in,
    int_in,
    real_in,
    torch_device,
)
from odedsl.runtime import activation_bytes

MODES = ("store", "invert")


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def trial(depth: int, mode: str, args: Any, device: torch.device) -> dict[str, Any]:
    """Build at ``depth`` and train ``args.steps`` steps; never raises for a network that does
    not fit (the row says why)."""
    row: dict[str, Any] = {"backward": mode, "depth": depth, "fits": False}
    net = opt = None
    try:
        torch.manual_seed(args.seed)
        params = {"depth": depth, "channels": 3, "size": args.size}
        net = C.compile_net("hamiltonian", backward=mode, **params).to(device).train()
        row["parameters"] = sum(p.numel() for p in net.parameters())
        row["blocks"] = 3 * depth
        x = torch.randn(args.batch, 3, args.size, args.size, device=device)
        y = torch.randint(0, 10, (args.batch,), device=device)
        row["activation_bytes"] = activation_bytes(net, x)
        cap = args.memory_cap_mib
        if cap is not None and row["activation_bytes"] > cap * 2**20:
            row["reason"] = f"saved activations over the {cap} MiB cap"
            return row
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        times, losses = [], []
        for _ in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                row["cuda_step_peak_bytes"] = torch.cuda.max_memory_allocated() - base
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
        timed = times[1:] if len(times) > 1 else times
        row.update(fits=True, seconds_per_step=C.median(timed), losses=losses)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
        if not _is_oom(err):
            raise
        row["reason"] = "CUDA out of memory" if device.type == "cuda" else "out of memory"
    finally:
        del net, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def search(mode: str, args: Any, device: torch.device, started: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    depth = args.start
    while depth <= args.max_depth:
        if time.perf_counter() - started > args.budget:
            rows.append({"backward": mode, "depth": depth, "fits": None, "reason": "run budget"})
            break
        row = trial(depth, mode, args, device)
        rows.append(row)
        sps = row.get("seconds_per_step")
        print(
            f"  {mode:6s} depth {depth:>6d}: "
            + (
                f"{row['activation_bytes'] / 2**20:9.1f} MiB saved, {sps:.3f} s/step"
                if row["fits"]
                else f"does not fit ({row['reason']})"
            ),
            flush=True,
        )
        if not row["fits"]:
            break
        if sps is not None and sps > args.step_budget:
            row["reason"] = f"step over {args.step_budget:g} s: deeper not tried"
            break
        depth *= 2
    else:
        if rows and rows[-1]["fits"]:
            rows[-1]["reason"] = "--max-depth reached: deeper not tried"
    return rows


def plot(record: dict, path: Any) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for mode, colour in (("store", "tab:red"), ("invert", "tab:blue")):
        rows = [r for r in record["rows"] if r["backward"] == mode and r.get("fits")]
        if rows:
            ax.loglog(
                [r["blocks"] for r in rows],
                [r["activation_bytes"] / 2**20 for r in rows],
                "o-",
                color=colour,
                label=f"{mode}: deepest {record['deepest'][mode] or '–'} blocks/stage",
            )
        failed = [r for r in record["rows"] if r["backward"] == mode and r.get("fits") is False]
        for r in failed:
            ax.axvline(3 * r["depth"], color=colour, ls=":", lw=1)
    ax.set_xlabel("reversible blocks (3 stages × depth)")
    ax.set_ylabel(f"saved activations (MiB), batch {record['batch']}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Deepest Hamiltonian network that trains (dotted: first that does not fit)")
    C.save_figure(fig, path, record["caption"])


def main(argv: Sequence[str] | None = None) -> dict:
    p = C.parser(__doc__, "deepest_hamiltonian")
    p.add_argument("--device", type=torch_device, default="cpu", help="cpu or cuda")
    seconds = real_in(0.0, MAX_SECONDS, low_open=True)
    p.add_argument("--batch", type=int_in(2, MAX_BATCH), default=None, help="default 128 (quick 4)")
    p.add_argument(
        "--size",
        type=int_in(4, MAX_SPATIAL),  # two 2×2 poolings: 4×4 at least
        default=None,
        help="image side, default 32 (quick 8)",
    )
    p.add_argument("--start", type=depth_in(), default=None, help="first depth/stage (16; quick 2)")
    p.add_argument("--max-depth", type=depth_in(), default=None, help="default 65536 (quick 64)")
    p.add_argument(
        "--steps", type=int_in(1, MAX_STEPS), default=None, help="training steps per depth (3)"
    )
    p.add_argument("--step-budget", type=seconds, default=None, help="seconds per step (30)")
    p.add_argument("--budget", type=seconds, default=None, help="whole run, seconds (420)")
    p.add_argument(
        "--memory-cap-mib", type=C.POSITIVE, default=None, help="CPU: cap on saved activations"
    )
    p.add_argument("--seed", type=C.SEED, default=0)
    args = p.parse_args(argv)
    if (done := C.replot(p, args, plot)) is not None:
        return done
    C.setup(args)
    device = torch.device(args.device)
    quick = args.quick
    defaults = {
        "batch": 4 if quick else 128,
        "size": 8 if quick else 32,
        "start": 2 if quick else 16,
        "max_depth": 64 if quick else 65536,
        "steps": 2 if quick else 3,
        "step_budget": 30.0,
        "budget": 120.0 if quick else 420.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.start > args.max_depth:
        p.error(f"--start {args.start} is above --max-depth {args.max_depth}: no depth to try")
    if quick and args.memory_cap_mib is None:
        args.memory_cap_mib = 2.0
    started = time.perf_counter()
    rows = [row for mode in MODES for row in search(mode, args, device, started)]
    deepest = {
        mode: max((r["depth"] for r in rows if r["backward"] == mode and r.get("fits")), default=0)
        or None
        for mode in MODES
    }
    where = f"synthetic 3×{args.size}×{args.size}, batch {args.batch}"
    caption = f"{where}; AdamW, {args.steps} steps per depth; {C.machine(device=args.device)}"
    record = C.env_record(
        args,
        experiment="deepest_hamiltonian",
        command="python examples/deepest_hamiltonian.py " + " ".join(argv or sys.argv[1:]),
        device=args.device,
        batch=args.batch,
        size=args.size,
        memory_cap_mib=args.memory_cap_mib,
        step_budget=args.step_budget,
        rows=rows,
        deepest=deepest,
        seconds=time.perf_counter() - started,
        caption=caption,
    )
    print(
        C.table(
            ["backward", "depth/stage", "blocks", "parameters", "saved MiB", "s/step", "note"],
            [
                [
                    r["backward"],
                    r["depth"],
                    r.get("blocks", "–"),
                    r.get("parameters", "–"),
                    r["activation_bytes"] / 2**20 if "activation_bytes" in r else "–",
                    r.get("seconds_per_step") or "–",
                    r.get("reason", ""),
                ]
                for r in rows
            ],
        )
    )
    print(
        "deepest that trains: "
        + ", ".join(f"{m} {d if d else '–'} blocks/stage" for m, d in deepest.items())
    )
    tag = (
        "deepest_hamiltonian"
        + ("_quick" if quick else "")
        + ("_cuda" if device.type == "cuda" else "")
    )
    C.write_json(args.out / f"{tag}.json", record)
    if not args.no_plot:
        plot(record, args.out / f"{tag}.png")
    return record


if __name__ == "__main__":
    main()
