"""Seed 000, §3.2, Prop. 2 and Fig. 2: a deep linear ResNet stays smooth in depth.

``specs/linear_resnet.ode`` (x_{n+1} = x_n + A_n x_n / N, x ∈ R², A_n zero-initialised) is
trained at several depths N on the regression x ↦ M x (M = expm(S), Gaussian inputs with
covariance diag(1, 1/4)), by the paper's *rescaled* gradient flow dA_n/dt = −N ∇_{A_n} L,
discretised as full-batch gradient descent with learning rate η·N (the same η, so the same flow
time t = η · iteration, at every N). Prop. 2: with A_n(0) close to each other (here all zero),
N · max_n ‖A_{n+1}(t) − A_n(t)‖ stays bounded uniformly in N and t; Th. 1 / Fig. 2: the weights
A_{⌊Ns⌋} converge to a Lipschitz function of depth s, at rate 1/N.

``--init random`` (A_n(0) drawn independently per layer) is the negative control: the bound's
hypothesis fails and N · max‖ΔA‖ grows like N.

    python examples/linear_resnet_smoothness.py           # ~15 s CPU
    python examples/linear_resnet_smoothness.py --quick   # seconds
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as C
import torch
from torch import Tensor, nn

from odedsl.cli.argtypes import MAX_STEPS, depth_in, int_in, real_in

S = torch.tensor([[0.2, 0.9], [-0.6, -0.1]], dtype=torch.float64)  # target M = expm(S)
GRID = 400  # points s in [0, 1) where weight functions are compared
MAX_LOGS = 5_000  # logged points per depth, each with its GRID × 2 × 2 float64 grid (12.8 kB)


def weights(model: nn.Module) -> Tensor:
    """(N, d, d): A_0 … A_{N−1}."""
    return torch.stack([m.linear1.weight.detach().clone() for m in model.body.f])


def smoothness(a: Tensor) -> float:
    """N · max_n ‖A_{n+1} − A_n‖₂ (spectral norm)."""
    n = a.shape[0]
    if n < 2:
        return 0.0
    return n * float(torch.linalg.matrix_norm(a[1:] - a[:-1], ord=2).max())


def on_grid(a: Tensor) -> Tensor:
    """Ψ_N(s) = A_{⌊N s⌋} at GRID points s = i / GRID."""
    n = a.shape[0]
    idx = (torch.arange(GRID, dtype=torch.float64) * n / GRID).floor().long().clamp(max=n - 1)
    return a[idx]


def problem(samples: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 2, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.5])
    m = torch.linalg.matrix_exp(S)
    return x, x @ m.T


def train_depth(depth: int, args: Any, x: Tensor, y: Tensor, seed: int) -> dict[str, Any]:
    model = C.compile_net("linear_resnet", dtype=torch.float64, depth=depth, d=2)
    if args.init == "random":
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for m in model.body.f:
                w = m.linear1.weight
                w.copy_(args.init_scale * torch.randn(w.shape, generator=gen, dtype=w.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=args.eta * depth)  # rescaled flow: lr ∝ N
    log: dict[str, list[float]] = {"iteration": [], "loss": [], "smoothness": []}
    grids = []
    t0 = time.perf_counter()
    for it in range(args.iterations + 1):
        loss = ((model(x) - y) ** 2).sum(1).mean()
        if it % args.log_every == 0 or it == args.iterations:
            a = weights(model)
            log["iteration"].append(it)
            log["loss"].append(float(loss.detach()))
            log["smoothness"].append(smoothness(a))
            grids.append(on_grid(a))
        if it == args.iterations:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    a = weights(model)
    return {
        "depth": depth,
        "log": log,
        "grids": torch.stack(grids),  # (logs, GRID, d, d); dropped from the JSON
        "final_weights": a,
        "final_loss": log["loss"][-1],
        "initial_loss": log["loss"][0],
        "final_smoothness": log["smoothness"][-1],
        "max_smoothness": max(log["smoothness"]),
        "seconds": time.perf_counter() - t0,
    }


def plot(record: dict, runs: list[dict], path: Any) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 8.0), dpi=120)
    cmap = plt.get_cmap("viridis")
    colours = {r["depth"]: cmap(i / max(1, len(runs) - 1)) for i, r in enumerate(runs)}
    ax = axes[0, 0]
    for r in runs:
        ax.semilogy(
            r["log"]["iteration"],
            r["log"]["loss"],
            color=colours[r["depth"]],
            label=f"N = {r['depth']}",
        )
    ax.set_xlabel(f"gradient-descent iteration (flow time t = {record['eta']:g} · iteration)")
    ax.set_ylabel("training loss  mean ‖Π x − M x‖²")
    ax.set_title("(a) loss curves: the same flow at every depth (curves overlap)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax = axes[0, 1]
    for r in runs:
        ax.plot(
            r["log"]["iteration"],
            r["log"]["smoothness"],
            color=colours[r["depth"]],
            label=f"N = {r['depth']}",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("N · maxₙ ‖Aₙ₊₁ − Aₙ‖₂")
    ax.set_title("(b) discrete Lipschitz constant in depth during training", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax = axes[1, 0]
    depths = [r["depth"] for r in runs]
    ax.plot(
        depths,
        [r["max_smoothness"] for r in runs],
        "o-",
        color="tab:blue",
        label="sup over training of N · maxₙ ‖Aₙ₊₁ − Aₙ‖₂ (Prop. 2: bounded)",
    )
    dist = [d for d in record["distance_to_deepest"] if d["distance"] is not None]
    if dist:
        ax.plot(
            [d["depth"] for d in dist],
            [d["distance"] for d in dist],
            "s-",
            color="tab:red",
            label=f"sup over s, t of ‖Ψ_N(s) − Ψ_{depths[-1]}(s)‖₂ (Th. 1: → 0)",
        )
        d0 = dist[0]
        ax.plot(
            [d["depth"] for d in dist],
            [d0["distance"] * d0["depth"] / d["depth"] for d in dist],
            ":",
            color="0.5",
            label="∝ 1/N",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("depth N")
    low = min([r["max_smoothness"] for r in runs] + [d["distance"] for d in dist])
    ax.set_ylim(bottom=low / 8)
    ax.set_title(
        f"(c) smoothness in depth and convergence in N (init: {record['init']})", fontsize=10
    )
    ax.legend(fontsize=7.5, loc="lower left")
    ax.grid(True, which="major", alpha=0.3)
    ax = axes[1, 1]
    styles = {(0, 0): "-", (0, 1): "--", (1, 0): "-.", (1, 1): ":"}
    for r in runs:
        a = torch.as_tensor(r["final_weights"])
        s = (torch.arange(a.shape[0], dtype=torch.float64) + 0.5) / a.shape[0]
        for (i, j), ls in styles.items():
            ax.plot(s, a[:, i, j], ls, color=colours[r["depth"]], lw=1.3)
    for (i, j), ls in styles.items():  # legend entries for the line styles, in black
        ax.plot([], [], ls, color="k", lw=1.3, label=f"A[{i},{j}]")
    ax.set_xlabel("depth s = n / N")
    ax.set_ylabel("final weights Aₙ (entries)")
    smooth = " one smooth function for every N" if record["init"] == "zero" else ""
    ax.set_title(f"(d) learned A(s){':' if smooth else ''}{smooth}", fontsize=10)
    ax.legend(fontsize=8, ncol=2, title="entry (colour: N as in (a))", title_fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.suptitle(
        "Seed 000 Prop. 2 / Fig. 2: deep linear ResNet, rescaled gradient flow", fontsize=11
    )
    C.save_figure(fig, path, record["caption"], rect=(0, 0.025, 1, 0.97))


def main(argv: Sequence[str] | None = None) -> dict:
    p = C.parser(__doc__, "linear_resnet_smoothness")
    p.add_argument("--depths", type=depth_in(), nargs="+", default=None)
    p.add_argument("--iterations", type=int_in(1, MAX_STEPS), default=None)
    p.add_argument("--eta", type=C.POSITIVE, default=0.02, help="flow time per iteration")
    p.add_argument("--samples", type=int_in(1, 1_000_000), default=64)
    p.add_argument("--seed", type=C.SEED, default=0)
    p.add_argument("--init", choices=["zero", "random"], default="zero")
    p.add_argument(
        "--init-scale", type=real_in(0.0, math.inf), default=0.1, help="std of --init random"
    )
    p.add_argument("--log-every", type=int_in(1, MAX_STEPS), default=None)
    args = p.parse_args(argv)
    args.iterations = args.iterations or (150 if args.quick else 400)
    args.log_every = args.log_every or max(1, args.iterations // 50)
    if args.iterations // args.log_every > MAX_LOGS:
        p.error(
            f"--log-every {args.log_every}: {args.iterations} iterations would log over "
            f"{MAX_LOGS} points per depth; pass --log-every "
            f"{args.iterations // (MAX_LOGS + 1) + 1} or more"
        )
    if (done := C.replot(p, args, lambda rec, path: plot(rec, rec["runs"], path))) is not None:
        return done
    C.setup(args)
    args.depths = sorted(args.depths or ([5, 10, 20, 40] if args.quick else [10, 25, 50, 100, 200]))
    x, y = problem(args.samples, args.seed)
    t0 = time.perf_counter()
    runs = [train_depth(n, args, x, y, args.seed) for n in args.depths]
    deepest = runs[-1]["grids"]
    distance = [
        {
            "depth": r["depth"],
            "distance": float(torch.linalg.matrix_norm(r["grids"] - deepest, ord=2).max())
            if r is not runs[-1]
            else None,
        }
        for r in runs
    ]
    seconds = time.perf_counter() - t0
    smooth = [r["max_smoothness"] for r in runs]
    ratio = max(smooth) / max(min(smooth), 1e-300)
    caption = (
        f"synthetic regression x ↦ expm(S)x in R², {args.samples} Gaussian samples (seed "
        f"{args.seed}); float64 full-batch GD, lr = {args.eta:g}·N, {args.iterations} "
        f"iterations; A_n init {args.init}; {C.machine()}"
    )
    record = C.env_record(
        args,
        experiment="linear_resnet_smoothness",
        command="python examples/linear_resnet_smoothness.py"
        + (" --quick" if args.quick else "")
        + (" --init random" if args.init == "random" else ""),
        depths=args.depths,
        iterations=args.iterations,
        eta=args.eta,
        samples=args.samples,
        seed=args.seed,
        init=args.init,
        target=torch.linalg.matrix_exp(S).tolist(),
        norm="spectral (operator 2-norm)",
        runs=[
            {k: (v.tolist() if isinstance(v, Tensor) else v) for k, v in r.items() if k != "grids"}
            for r in runs
        ],
        distance_to_deepest=distance,
        smoothness_ratio=ratio,
        seconds=seconds,
        caption=caption,
    )
    print(
        C.table(
            [
                "N",
                "initial loss",
                "final loss",
                "N·max‖ΔA‖ final",
                "N·max‖ΔA‖ sup_t",
                "sup‖Ψ_N − Ψ_Nmax‖",
                "s",
            ],
            [
                [
                    r["depth"],
                    r["initial_loss"],
                    r["final_loss"],
                    r["final_smoothness"],
                    r["max_smoothness"],
                    d["distance"] if d["distance"] is not None else "–",
                    round(r["seconds"], 1),
                ]
                for r, d in zip(runs, distance, strict=True)
            ],
        )
    )
    print(f"ratio of sup_t N·max‖ΔA‖, largest/smallest over N: {ratio:.3g}")
    print(f"{seconds:.1f} s")
    suffix = "" if args.init == "zero" else f"_{args.init}"
    out = args.out / f"linear_resnet_smoothness{suffix}"
    C.write_json(out.with_suffix(".json"), record)
    if not args.no_plot:
        plot(record, runs, out.with_suffix(".png"))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
