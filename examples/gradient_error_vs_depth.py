"""Seed 000, Fig. 3c: gradient error of the memory-free adjoint against depth.

For each integrator (Euler = ResNet, ``specs/resnet.ode``; Heun = HeunNet,
``specs/heunnet.ode``) a **tied** network (one residual θ for all layers) is trained briefly on
the 8×8 digits at ``--train-depth``, then copied in depth to an **untied** network of each depth
N (every θ_n equal to the trained θ, as in seed 000 §5.2), compiled in float64 twice: once with
``backward store`` (exact backprop, the reference) and once with ``backward invert`` (the
reverse-time Euler / Heun scheme, eqs. 6–9). Both see the same batch of training images and the
same cross-entropy loss in **eval mode**: BatchNorm uses the trained running statistics, so every
residual is a fixed map f(·, θ) and the only difference between the two gradients is how the
activations are recovered. Reported: ‖g − g_store‖ / ‖g_store‖ over all parameters and per
parameter tensor, the reconstruction error of the stage input, and the log-log slope.

Expected (Prop. 4 and 6): the error falls with depth, as 1/N for the ResNet; the HeunNet's error
is bounded by O(Δ/N + 1/N²) with Δ the weights' variation in depth, here Δ = 0. Measured, it
falls faster still: with constant weights one Heun step undone by the reverse Heun step is the
identity up to O(h⁴) (the h³ error terms of the steps h and −h cancel), so the reconstruction
error is O(1/N³); the gradient error follows, plus ReLU sign flips at small N.

    python examples/gradient_error_vs_depth.py            # 3 seeds: ~2 min CPU, 3.6 GB peak
    python examples/gradient_error_vs_depth.py --quick    # seconds
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as C
import torch
from torch import Tensor, nn

from odedsl.cli.argtypes import depth_in, int_in

NETS = {"euler": "resnet", "heun": "heunnet"}  # integrator -> spec (ResNet, HeunNet)
LABEL = {"euler": "ResNet (Euler)", "heun": "HeunNet (Heun)"}


def reconstruction(model: nn.Module, x: Tensor) -> float | None:
    """‖x̂₀ − x₀‖/‖x₀‖ of the body's input after N steps forward and N inverse steps."""
    try:
        from odedsl.training.gradcheck import reconstruction_error
    except ImportError:  # pragma: no cover - the library's helper is optional here
        return None
    with torch.no_grad():
        x0 = model.stem(x)
    return float(reconstruction_error(model.body, x0))


def train_tied(integrator: str, args: Any, data: C.Data, seed: int) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    net = C.compile_net(
        NETS[integrator], weights="tied", backward="store", depth=args.train_depth, **C.DIGITS
    )
    run = C.train(
        net,
        data,
        epochs=args.epochs,
        lr=args.lr,
        optimizer="adamw",
        batch_size=32,
        seed=seed,
    )
    return net, run


def sweep(integrator: str, tied: nn.Module, args: Any, data: C.Data, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data[1]), generator=gen)[: args.batch]
    x, y = data[0][idx].double(), data[1][idx]
    rows = []
    for depth in args.depths:
        nets = {}
        for mode in ("store", "invert"):
            net = C.compile_net(
                NETS[integrator], backward=mode, dtype=torch.float64, depth=depth, **C.DIGITS
            )
            nets[mode] = net
        state = C.convert(tied, nets["store"])  # tied θ copied to every slot
        for net in nets.values():
            net.load_state_dict(
                {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
            )
            net.train(args.bn == "train")
        t0 = time.perf_counter()
        g_ref = C.grads(nets["store"], x, y)
        g_inv = C.grads(nets["invert"], x, y)
        seconds = time.perf_counter() - t0
        keys = list(g_ref)
        body = [k for k in keys if k.startswith("body.")]
        per_param = {
            k: C.relative([g_inv[k]], [g_ref[k]])
            for k in body
            if float(g_ref[k].abs().max()) > 0  # a few BN biases may get exactly zero gradient
        }
        rows.append(
            {
                "integrator": integrator,
                "depth": depth,
                "seed": seed,
                "grad_error": C.relative([g_inv[k] for k in keys], [g_ref[k] for k in keys]),
                "body_grad_error": C.relative([g_inv[k] for k in body], [g_ref[k] for k in body]),
                "stem_grad_error": C.relative(
                    [g_inv[k] for k in keys if k.startswith("stem.")],
                    [g_ref[k] for k in keys if k.startswith("stem.")],
                ),
                "median_param_error": C.median(list(per_param.values())),
                "param_errors": [float(f"{v:.3g}") for v in per_param.values()],
                "reconstruction_error": reconstruction(nets["invert"], x),
                "seconds": seconds,
            }
        )
    return rows


def _spread(rows: list[dict], key: str, depths: list[int]) -> tuple[list, list, list]:
    mid, lo, hi = [], [], []
    for d in depths:
        vals = [r[key] for r in rows if r["depth"] == d and r[key] is not None]
        mid.append(C.median(vals))
        lo.append(C.median(vals) - min(vals))
        hi.append(max(vals) - C.median(vals))
    return mid, lo, hi


def plot(record: dict, path: Any) -> None:
    plt = C.pyplot()
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(12.5, 5.2), dpi=120, gridspec_kw={"width_ratios": [1.35, 1]}
    )
    colours = {"euler": "tab:blue", "heun": "tab:orange"}
    depths = sorted(record["depths"])
    for integ in record["integrators"]:
        rows = [r for r in record["rows"] if r["integrator"] == integ]
        # per-parameter errors (one point per parameter tensor, as in the paper), offset
        jitter = 1.06 if integ == "heun" else 0.94
        for r in rows:
            vals = [v for v in r["param_errors"] if v and v > 0]
            ax.scatter(
                [r["depth"] * jitter] * len(vals),
                vals,
                s=5,
                alpha=0.15,
                color=colours[integ],
                linewidths=0,
            )
        mid, lo, hi = _spread(rows, "grad_error", depths)
        ax.errorbar(
            depths,
            mid,
            yerr=[lo, hi],
            fmt="o-",
            color=colours[integ],
            lw=2,
            capsize=3,
            label=f"{LABEL[integ]}: all parameters, slope {record['slopes'][integ]:+.2f}",
        )
        mid, lo, hi = _spread(rows, "reconstruction_error", depths)
        slope = record["reconstruction_slopes"].get(integ)
        bx.errorbar(
            depths,
            mid,
            yerr=[lo, hi],
            fmt="o-",
            color=colours[integ],
            lw=2,
            capsize=3,
            label=f"{LABEL[integ]}, slope {slope:+.2f}",
        )
    for a, key in ((ax, "grad_error"), (bx, "reconstruction_error")):
        first = C.median(
            [
                r[key]
                for r in record["rows"]
                if r["depth"] == depths[0] and r["integrator"] == "euler"
            ]
        )
        for pw, ls, name in ((1, ":", "1/N"), (2, "--", "1/N²"), (3, "-.", "1/N³")):
            if a is ax and pw == 3:
                continue
            a.plot(
                depths,
                [first * (depths[0] / d) ** pw for d in depths],
                ls,
                color="0.5",
                lw=1,
                label=f"∝ {name}",
            )
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xticks(depths, [str(d) for d in depths])
        a.minorticks_off()
        a.grid(True, which="major", alpha=0.3)
        a.set_xlabel(
            f"depth N (the depth-{record['train_depth']} tied net's θ copied to every layer)"
        )
        a.legend(fontsize=8, loc="lower left")
    ax.set_ylabel("‖g_invert − g_store‖ / ‖g_store‖")
    ax.set_title(
        "(a) gradient error of the adjoint (invert) vs backprop (store)\n"
        "dots: individual parameter tensors of the residual stage",
        fontsize=10,
    )
    bx.set_ylabel("‖x̂₀ − x₀‖ / ‖x₀‖")
    bx.set_title(
        "(b) reconstruction error of the stage input\n(N steps forward, N reverse steps back)",
        fontsize=10,
    )
    fig.suptitle("Seed 000 Fig. 3c: memory-free adjoint vs depth, ResNet and HeunNet", fontsize=11)
    C.save_figure(fig, path, record["caption"], rect=(0, 0.03, 1, 1))


def main(argv: Sequence[str] | None = None) -> dict:
    p = C.parser(__doc__, "gradient_error_vs_depth")
    p.add_argument("--depths", type=depth_in(), nargs="+", default=None)
    p.add_argument("--train-depth", type=depth_in(), default=8)
    p.add_argument("--epochs", type=C.EPOCHS, default=None)
    p.add_argument("--lr", type=C.POSITIVE, default=1e-2)
    p.add_argument(
        "--batch",
        type=int_in(1, C.TRAIN_IMAGES),
        default=None,
        help="training images in the gradient batch (default 32; quick 16)",
    )
    p.add_argument("--seeds", type=C.SEED, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    p.add_argument(
        "--bn",
        choices=["eval", "train"],
        default="eval",
        help="BatchNorm with the trained running statistics (eval) or batch statistics of "
        "the identical batch in both networks (train)",
    )
    p.add_argument("--integrators", nargs="+", default=["euler", "heun"], choices=list(NETS))
    args = p.parse_args(argv)
    if args.bn == "train" and args.batch == 1:
        p.error("--batch 1 with --bn train: batch statistics need two images at least")
    if (done := C.replot(p, args, plot)) is not None:
        return done
    C.setup(args)
    args.depths = args.depths or ([4, 8, 16, 32] if args.quick else [4, 8, 16, 32, 64, 128, 256])
    args.epochs = args.epochs or (1.0 if args.quick else 4.0)
    args.batch = args.batch or (16 if args.quick else 32)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    data = C.digits()
    t0 = time.perf_counter()
    rows, training = [], []
    for seed in args.seeds:
        for integ in args.integrators:
            tied, run = train_tied(integ, args, data, seed)
            training.append(
                {
                    "integrator": integ,
                    "seed": seed,
                    "train_depth": args.train_depth,
                    "test_accuracy_eval_mode": run["test_accuracy"],
                    "final_loss": run["final_loss"],
                    "seconds": run["seconds"],
                }
            )
            rows += sweep(integ, tied, args, data, seed)
    slopes = {
        integ: C.fit_slope(
            [r["depth"] for r in rows if r["integrator"] == integ],
            [r["grad_error"] for r in rows if r["integrator"] == integ],
        )
        for integ in args.integrators
    }
    recon_slopes = {
        integ: C.fit_slope(
            [r["depth"] for r in rows if r["integrator"] == integ],
            [r["reconstruction_error"] or float("nan") for r in rows if r["integrator"] == integ],
        )
        for integ in args.integrators
    }
    seconds = time.perf_counter() - t0
    caption = (
        f"8×8 digits (sklearn), tied net trained {args.epochs:g} epochs at depth "
        f"{args.train_depth}; gradients in float64, eval-mode BatchNorm, batch of {args.batch} "
        f"training images, cross-entropy; seeds {args.seeds}; {C.machine()}"
    )
    record = C.env_record(
        args,
        experiment="gradient_error_vs_depth",
        command="python examples/gradient_error_vs_depth.py" + (" --quick" if args.quick else ""),
        integrators=args.integrators,
        depths=args.depths,
        train_depth=args.train_depth,
        epochs=args.epochs,
        batch=args.batch,
        seeds=args.seeds,
        batchnorm="eval mode (trained running statistics, copied to every layer)",
        training=training,
        rows=rows,
        slopes=slopes,
        reconstruction_slopes=recon_slopes,
        seconds=seconds,
        caption=caption,
    )
    print(
        C.table(
            [
                "integrator",
                "depth",
                "seed",
                "grad error (all)",
                "median per-param",
                "stem",
                "reconstruction",
            ],
            [
                [
                    LABEL[r["integrator"]],
                    r["depth"],
                    r["seed"],
                    r["grad_error"],
                    r["median_param_error"],
                    r["stem_grad_error"],
                    r["reconstruction_error"] if r["reconstruction_error"] is not None else "–",
                ]
                for r in rows
            ],
        )
    )
    print(
        "log-log slopes of the gradient error:",
        ", ".join(f"{LABEL[k]} {v:+.2f}" for k, v in slopes.items()),
    )
    print(
        "log-log slopes of the reconstruction error:",
        ", ".join(f"{LABEL[k]} {v:+.2f}" for k, v in recon_slopes.items()),
    )
    print(f"{seconds:.1f} s")
    out = args.out / "gradient_error_vs_depth"
    C.write_json(out.with_suffix(".json"), record)
    if not args.no_plot:
        plot(record, out.with_suffix(".png"))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
