"""Seed 000, §5.2 "New training strategy" (Table 2): tied → deeper untied → adjoint fine-tuning.

1. Train ``specs/resnet.ode`` with **tied** weights (one residual θ for every layer) at a small
   depth N₀ with exact backprop, on the 8×8 digits.
2. Convert it to an **untied** network of depth N₁ > N₀: every θ_n = θ
   (``odedsl.checkpoints.convert_state_dict``). With step 1/N the deeper network is a finer
   Euler discretisation of the same ODE, so its accuracy should barely move (the paper: "one
   can transfer these weights to deeper ResNets without significantly affecting the test
   accuracy").
3. Fine-tune the untied network with the memory-free **adjoint** (``backward invert``), whose
   gradient is accurate because N₁ is large and the start is smooth in depth (Prop. 4–6).

Reported: test accuracy before conversion, after conversion, after fine-tuning; and two controls
with the same extra epochs: fine-tuning with exact backprop (``store``), and simply training the
tied depth-N₀ network longer.

BatchNorm: a tied stage shares one BatchNorm module between its layers, so its running
statistics average the inputs of all layers and eval mode mis-normalises (a large accuracy
loss on the digits). Accuracies are therefore also given after recomputing the running
statistics of the untied copy layer by layer (no gradients, no labels:
``_common.recalibrate_batchnorm``); "tied" accuracies in that column are those of the tied
network's untied copy at the same depth, which computes the same function in train mode.

``--noise σ``: digits with Gaussian pixel noise, a task where the tied network is not already
at the ceiling (see ``adjoint_accuracy_vs_depth.py``).

    python examples/tied_to_untied.py           # 3 seeds: ~1 min CPU
    python examples/tied_to_untied.py --quick   # seconds
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as C
import torch
from torch import nn

from odedsl.cli.argtypes import depth_in


def untied(tied: nn.Module, depth: int, backward: str) -> nn.Module:
    net = C.compile_net("resnet", backward=backward, depth=depth, **C.DIGITS)
    net.load_state_dict(C.convert(tied, net))
    return net


def scores(net: nn.Module, data: C.Data, tied_depth: int | None = None) -> dict[str, float]:
    """Eval-mode test accuracy as is, and after per-layer BatchNorm recalibration (for a tied
    network: of its untied copy at ``tied_depth``, the same function in train mode)."""
    raw = C.accuracy(net, data[2], data[3])
    probe = untied(net, tied_depth, "store") if tied_depth else copy.deepcopy(net)
    C.recalibrate_batchnorm(probe, data[0])
    return {"raw": raw, "recalibrated": C.accuracy(probe, data[2], data[3])}


def one_seed(seed: int, args: Any, data: C.Data) -> dict[str, Any]:
    torch.manual_seed(seed)
    tied = C.compile_net(
        "resnet", weights="tied", backward="store", depth=args.tied_depth, **C.DIGITS
    )
    pre = C.train(
        tied,
        data,
        epochs=args.pretrain_epochs,
        lr=args.lr,
        optimizer="adamw",
        batch_size=args.batch_size,
        seed=seed,
    )
    out: dict[str, Any] = {"seed": seed, "pretrain_seconds": pre["seconds"]}
    out["tied"] = scores(tied, data, args.tied_depth)
    converted = untied(tied, args.depth, "invert")
    out["converted"] = scores(converted, data)
    fine: dict[str, Any] = {}
    for mode in ("invert", "store"):
        net = untied(tied, args.depth, mode)
        C.recalibrate_batchnorm(net, data[0])  # start from per-layer statistics
        run = C.train(
            net,
            data,
            epochs=args.finetune_epochs,
            lr=args.finetune_lr,
            optimizer="adamw",
            batch_size=args.batch_size,
            seed=seed + 100,
        )
        fine[mode] = {**scores(net, data), "seconds": run["seconds"], "finite": run["finite"]}
    out["finetuned_adjoint"] = fine["invert"]
    out["finetuned_backprop"] = fine["store"]
    longer = copy.deepcopy(tied)  # control: the same extra epochs on the tied net
    run = C.train(
        longer,
        data,
        epochs=args.finetune_epochs,
        lr=args.finetune_lr,
        optimizer="adamw",
        batch_size=args.batch_size,
        seed=seed + 100,
    )
    out["tied_longer"] = {**scores(longer, data, args.tied_depth), "seconds": run["seconds"]}
    return out


STAGES = (
    ("tied", "tied, depth N₀ (exact backprop)"),
    ("converted", "untied copy at depth N₁, before fine-tuning"),
    ("finetuned_adjoint", "… fine-tuned with the adjoint (invert)"),
    ("finetuned_backprop", "… fine-tuned with backprop (store), control"),
    ("tied_longer", "tied depth N₀ trained the same extra epochs, control"),
)


def plot(record: dict, path: Any) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 4.8), dpi=120)
    names = [k for k, _ in STAGES]
    width = 0.38
    for j, (col, label, colour) in enumerate(
        (
            ("raw", "eval mode, running statistics as trained/copied", "0.65"),
            ("recalibrated", "eval mode, per-layer BatchNorm statistics recomputed", "tab:blue"),
        )
    ):
        med = [C.median([s[n][col] for s in record["seeds_detail"]]) for n in names]
        lo = [
            m - min(s[n][col] for s in record["seeds_detail"])
            for m, n in zip(med, names, strict=True)
        ]
        hi = [
            max(s[n][col] for s in record["seeds_detail"]) - m
            for m, n in zip(med, names, strict=True)
        ]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, [100 * m for m in med], width, color=colour, label=label)
        ax.errorbar(
            xs,
            [100 * m for m in med],
            yerr=[[100 * v for v in lo], [100 * v for v in hi]],
            fmt="none",
            ecolor="k",
            capsize=3,
            lw=1,
        )
        for b, m, up in zip(bars, med, hi, strict=True):
            ax.text(
                b.get_x() + b.get_width() / 2,
                100 * (m + up) + 0.3,
                f"{100 * m:.1f}",
                ha="center",
                va="bottom",
                fontsize=7.5,
            )
    n0, n1 = record["tied_depth"], record["depth"]
    labels = [
        f"tied\nN₀ = {n0}",
        f"untied copy\nN₁ = {n1}",
        "fine-tuned\nadjoint (invert)",
        "fine-tuned\nbackprop (store)",
        f"tied N₀ = {n0}\ntrained longer",
    ]
    ax.set_xticks(range(len(names)), labels, fontsize=8.5)
    lows = [min(s[n]["raw"] for s in record["seeds_detail"] for n in names)]
    ax.set_ylim(max(0, 100 * min(lows) - 8), 101.5)
    ax.set_ylabel("test accuracy (%), median over seeds (bars: min–max)")
    ax.set_title(
        f"Seed 000 §5.2 on {C.data_label(record.get('noise') or 0)}:\ntied depth {n0} → "
        f"untied depth {n1} → fine-tune with the adjoint",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, axis="y", alpha=0.3)
    C.save_figure(fig, path, record["caption"], rect=(0, 0.04, 1, 1))


def main(argv: Sequence[str] | None = None) -> dict:
    p = C.parser(__doc__, "tied_to_untied")
    p.add_argument("--tied-depth", type=depth_in(), default=None, help="N₀ (default 4; quick 2)")
    p.add_argument("--depth", type=depth_in(), default=None, help="N₁ (default 32; quick 8)")
    p.add_argument("--pretrain-epochs", type=C.EPOCHS, default=None)
    p.add_argument("--finetune-epochs", type=C.EPOCHS, default=None)
    p.add_argument("--lr", type=C.POSITIVE, default=1e-2, help="pretraining (AdamW, cosine)")
    p.add_argument(
        "--finetune-lr", type=C.POSITIVE, default=1e-3, help="fine-tuning (AdamW, cosine)"
    )
    p.add_argument("--batch-size", type=C.TRAIN_BATCH, default=32)
    p.add_argument("--seeds", type=C.SEED, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    C.add_noise_option(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.tied_depth = args.tied_depth or (2 if args.quick else 4)
    args.depth = args.depth or (8 if args.quick else 32)
    if args.depth < args.tied_depth:
        p.error(
            f"--depth {args.depth} is below --tied-depth {args.tied_depth}: the untied copy "
            "is the deeper network (N₁ ≥ N₀)"
        )
    if (done := C.replot(p, args, plot)) is not None:
        return done
    C.setup(args)
    args.pretrain_epochs = args.pretrain_epochs or (3.0 if args.quick else 6.0)
    args.finetune_epochs = args.finetune_epochs or (1.0 if args.quick else 2.0)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    data = C.noisy(C.digits(), args.noise)
    t0 = time.perf_counter()
    detail = []
    for seed in args.seeds:
        detail.append(one_seed(seed, args, data))
        print(f"  seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - t0
    summary = {
        k: {col: C.median([d[k][col] for d in detail]) for col in ("raw", "recalibrated")}
        for k, _ in STAGES
    }
    caption = (
        f"{C.data_label(args.noise)} (sklearn); tied N₀={args.tied_depth}: AdamW lr {args.lr:g}, "
        f"{args.pretrain_epochs:g} epochs; untied N₁={args.depth}: AdamW lr {args.finetune_lr:g}, "
        f"{args.finetune_epochs:g} epochs; batch {args.batch_size}; seeds {args.seeds}; "
        f"{C.machine()}"
    )
    record = C.env_record(
        args,
        experiment="tied_to_untied",
        command=" ".join(["python examples/tied_to_untied.py", *argv]),
        tied_depth=args.tied_depth,
        depth=args.depth,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        finetune_lr=args.finetune_lr,
        batch_size=args.batch_size,
        seeds=args.seeds,
        noise=args.noise,
        seeds_detail=detail,
        summary=summary,
        seconds=seconds,
        caption=caption,
    )
    print(
        C.table(
            ["network", "test acc. (eval, stats as is)", "test acc. (per-layer BN stats)"],
            [
                [
                    label.replace("N₀", f"N₀={args.tied_depth}").replace("N₁", f"N₁={args.depth}"),
                    summary[k]["raw"],
                    summary[k]["recalibrated"],
                ]
                for k, label in STAGES
            ],
        )
    )
    print(f"median over seeds {args.seeds}; {seconds:.0f} s")
    out = args.out / C.result_name("tied_to_untied", args.noise)
    C.write_json(out.with_suffix(".json"), record)
    if not args.no_plot:
        plot(record, out.with_suffix(".png"))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
