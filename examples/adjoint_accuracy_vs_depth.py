"""Seed 000, §5.2 "Success at large depth" and Fig. 4, on the 8×8 digits (plain or noisy).

The paper's simple ResNet (``specs/resnet.ode``: conv 5×5 stem with 16 channels, BatchNorm,
ReLU, N basic blocks with zero-initialised last BatchNorm, step 1/N, untied weights, average
pooling, linear classifier) and its HeunNet twin (``specs/heunnet.ode``) are trained from
scratch at each depth N with exact backprop (``backward store``) and with the memory-free
adjoint (``backward invert``: activations recovered by the reverse Euler / Heun scheme, eqs. 6
and 9, approximate gradients). Reported: test accuracy (359 held-out digits).

Expected (Prop. 4 and 6): the adjoint's gradient error falls with depth, so it trains badly at
small N and matches backprop at large N; at fixed N Heun's adjoint is at least as good as
Euler's. Backprop gives about the same accuracy for both integrators.

The plain digits are too easy to show the accuracy side: a gradient with cosine 0.7 still
trains the net to 99 %. ``--noise σ`` adds Gaussian pixel noise of standard deviation σ (in
units of the standardised pixels; one fixed draw, the same for every run) to the training and
test images, a task hard enough that how well the optimiser descends shows in the training
loss and the accuracy. Also reported: the training loss over the whole training set at the end.

    python examples/adjoint_accuracy_vs_depth.py           # ~3 min CPU (1 seed)
    python examples/adjoint_accuracy_vs_depth.py --noise 1 --epochs 8 --seeds 0 1 2  # ~12 min
    python examples/adjoint_accuracy_vs_depth.py --quick   # seconds
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as C
import torch

from odedsl.cli.argtypes import depth_in, int_in

NETS = {"euler": "resnet", "heun": "heunnet"}
LABEL = {"euler": "ResNet", "heun": "HeunNet"}
MODE = {"store": "backprop", "invert": "adjoint"}


def run_one(integrator: str, mode: str, depth: int, seed: int, args: Any, data: C.Data) -> dict:
    torch.manual_seed(seed)
    net = C.compile_net(NETS[integrator], backward=mode, depth=depth, **C.DIGITS)
    res = C.train(
        net,
        data,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        seed=seed,
    )
    probe = {"grad_error": 0.0, "grad_cosine": 1.0}
    if mode != "store":  # how far the adjoint's gradient is from backprop's, after training
        gen = torch.Generator().manual_seed(1234)
        idx = torch.randperm(len(data[1]), generator=gen)[: args.probe_batch]
        reference = C.compile_net(NETS[integrator], backward="store", depth=depth, **C.DIGITS)
        probe = C.gradient_agreement(net, reference, data[0][idx], data[1][idx])
    return {
        **probe,
        "integrator": integrator,
        "backward": mode,
        "depth": depth,
        "seed": seed,
        "test_accuracy": res["test_accuracy"],
        "train_loss": C.dataset_loss(net, data[0], data[1]),
        "final_loss": res["final_loss"],
        "finite": res["finite"],
        "seconds": res["seconds"],
        "steps": res["steps"],
    }


def summary(rows: list[dict], depths: list[int]) -> list[dict]:
    out = []
    for integ in NETS:
        for mode in MODE:
            for d in depths:
                sel = [
                    r
                    for r in rows
                    if r["integrator"] == integ and r["backward"] == mode and r["depth"] == d
                ]
                accs = [r["test_accuracy"] for r in sel]
                if accs:
                    out.append(
                        {
                            "integrator": integ,
                            "backward": mode,
                            "depth": d,
                            "median": C.median(accs),
                            "min": min(accs),
                            "max": max(accs),
                            "runs": len(accs),
                            "grad_error": C.median([r["grad_error"] for r in sel]),
                            "grad_cosine": C.median([r["grad_cosine"] for r in sel]),
                            "train_loss": C.median([r["train_loss"] for r in sel]),
                        }
                    )
    return out


def plot(record: dict, path: Any) -> None:
    plt = C.pyplot()
    # runs before --noise kept no training loss: two panels then
    with_loss = all("train_loss" in s for s in record["summary"])
    fig, axes = plt.subplots(
        1, 3 if with_loss else 2, figsize=(18 if with_loss else 12.5, 5.0), dpi=120
    )
    ax, bx = axes[0], axes[1]
    style = {  # colour, line, marker, x offset (so that equal points stay visible)
        ("euler", "store"): ("tab:blue", "-", "o", 0.91),
        ("euler", "invert"): ("tab:blue", "--", "o", 0.97),
        ("heun", "store"): ("tab:orange", "-", "s", 1.03),
        ("heun", "invert"): ("tab:orange", "--", "s", 1.09),
    }
    depths = record["depths"]
    for (integ, mode), (col, ls, mk, dx) in style.items():
        pts = [s for s in record["summary"] if s["integrator"] == integ and s["backward"] == mode]
        if not pts:
            continue
        err = [100 * (1 - s["median"]) for s in pts]
        lo = [100 * (s["median"] - s["min"]) for s in pts]
        hi = [100 * (s["max"] - s["median"]) for s in pts]
        ax.errorbar(
            [s["depth"] * dx for s in pts],
            err,
            yerr=[hi, lo],
            color=col,
            ls=ls,
            marker=mk,
            mfc="none" if mode == "invert" else col,
            ms=7,
            capsize=3,
            lw=1.6,
            label=f"{LABEL[integ]} + {MODE[mode]}" + (" (invert)" if mode == "invert" else ""),
        )
        if with_loss:
            axes[2].plot(
                [s["depth"] * dx for s in pts],
                [s["train_loss"] for s in pts],
                color=col,
                ls=ls,
                marker=mk,
                mfc="none" if mode == "invert" else col,
                ms=7,
                lw=1.6,
                label=f"{LABEL[integ]} + {MODE[mode]}",
            )
        if mode == "invert":
            bx.plot(
                [s["depth"] for s in pts],
                [s["grad_error"] for s in pts],
                color=col,
                ls=ls,
                marker=mk,
                lw=1.8,
                label=f"{LABEL[integ]} + adjoint: ‖g − g_backprop‖ / ‖g_backprop‖",
            )
            bx.plot(
                [s["depth"] for s in pts],
                [1 - s["grad_cosine"] for s in pts],
                color=col,
                ls=":",
                marker=mk,
                lw=1.2,
                mfc="none",
                label=f"{LABEL[integ]} + adjoint: 1 − cosine",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("depth N")
    n_test = 359
    ax.set_ylabel(
        f"test error (%), median over seeds {record['seeds']}\n"
        f"(one test image = {100 / n_test:.2f} points)"
    )
    ax.set_title("(a) test error: adjoint (invert) vs backprop (store)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.25)
    ax.legend(fontsize=8, loc="upper left")
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.set_xticks(depths, [str(d) for d in depths])
    bx.minorticks_off()
    bx.set_xlabel("depth N")
    bx.set_ylabel("after training: adjoint gradient vs exact gradient")
    bx.set_title(
        f"(b) the adjoint's gradient error at the end of training\n(train-mode BatchNorm, "
        f"{record['probe_batch']} training images, same weights)",
        fontsize=10,
    )
    bx.grid(True, which="major", alpha=0.3)
    bx.legend(fontsize=7.5)
    if with_loss:
        cx = axes[2]
        cx.set_xscale("log", base=2)
        cx.set_xticks(depths, [str(d) for d in depths])
        cx.minorticks_off()
        cx.set_xlabel("depth N")
        cx.set_ylabel("training loss at the end\n(whole training set, median over seeds)")
        cx.set_title("(c) how far each training run got", fontsize=10)
        cx.grid(True, which="major", alpha=0.3)
        cx.legend(fontsize=8)
    data = C.data_label(record.get("noise") or 0)
    fig.suptitle(f"Seed 000 Fig. 4 on {data}: training with the memory-free adjoint", fontsize=11)
    C.save_figure(fig, path, record["caption"])


def main(argv: Sequence[str] | None = None) -> dict:
    p = C.parser(__doc__, "adjoint_accuracy_vs_depth")
    p.add_argument("--depths", type=depth_in(), nargs="+", default=None)
    p.add_argument("--epochs", type=C.EPOCHS, default=None)
    p.add_argument("--lr", type=C.POSITIVE, default=1e-2)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--batch-size", type=C.TRAIN_BATCH, default=32)
    p.add_argument("--seeds", type=C.SEED, nargs="+", default=[0])
    p.add_argument(
        "--probe-batch",
        type=int_in(2, C.TRAIN_IMAGES),  # train-mode BatchNorm: two images at least
        default=256,
        help="training images in the gradient probe",
    )
    p.add_argument("--integrators", nargs="+", default=list(NETS), choices=list(NETS))
    C.add_noise_option(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if (done := C.replot(p, args, plot)) is not None:
        return done
    C.setup(args)
    args.depths = sorted(args.depths or ([2, 8] if args.quick else [2, 4, 8, 16, 32]))
    args.epochs = args.epochs or (1.0 if args.quick else 4.0)
    data = C.noisy(C.digits(), args.noise)
    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for integ in args.integrators:
            for depth in args.depths:
                for mode in MODE:
                    r = run_one(integ, mode, depth, seed, args, data)
                    rows.append(r)
                    print(
                        f"  {LABEL[integ]:8s} {MODE[mode]:8s} N={depth:<3d} seed {seed}: "
                        f"test accuracy {r['test_accuracy']:.3f}, training loss "
                        f"{r['train_loss']:.3f}, gradient vs backprop: rel. error "
                        f"{r['grad_error']:.3g}, cosine {r['grad_cosine']:.3f} "
                        f"({r['seconds']:.1f} s)",
                        flush=True,
                    )
    seconds = time.perf_counter() - t0
    summ = summary(rows, args.depths)
    caption = (
        f"{C.data_label(args.noise)} (sklearn, 1438 train / 359 test), {args.optimizer} "
        f"lr {args.lr:g} cosine, batch {args.batch_size}, {args.epochs:g} epochs, width 16, "
        f"seeds {args.seeds}; "
        f"{C.machine()}"
    )
    record = C.env_record(
        args,
        experiment="adjoint_accuracy_vs_depth",
        command=" ".join(["python examples/adjoint_accuracy_vs_depth.py", *argv]),
        depths=args.depths,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        seeds=args.seeds,
        noise=args.noise,
        probe_batch=args.probe_batch,
        rows=rows,
        summary=summ,
        seconds=seconds,
        caption=caption,
    )
    for what, label in (("median", "test accuracy"), ("train_loss", "training loss")):
        get = {(s["integrator"], s["backward"], s["depth"]): s[what] for s in summ}
        print(
            C.table(
                ["depth", *(f"{LABEL[i]} {MODE[m]}" for i in args.integrators for m in MODE)],
                [
                    [d, *(get.get((i, m, d), float("nan")) for i in args.integrators for m in MODE)]
                    for d in args.depths
                ],
            )
        )
        print(f"{label}, median over seeds {args.seeds}")
    print(
        C.table(
            ["depth", *(f"{LABEL[i]} adjoint grad error / cosine" for i in args.integrators)],
            [
                [
                    d,
                    *(
                        f"{s['grad_error']:.3g} / {s['grad_cosine']:.3f}"
                        for i in args.integrators
                        for s in summ
                        if (s["integrator"], s["backward"], s["depth"]) == (i, "invert", d)
                    ),
                ]
                for d in args.depths
            ],
        )
    )
    print(f"{seconds:.0f} s")
    out = args.out / C.result_name("adjoint_accuracy_vs_depth", args.noise)
    C.write_json(out.with_suffix(".json"), record)
    if not args.no_plot:
        plot(record, out.with_suffix(".png"))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
