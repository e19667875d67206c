"""odedsl's memory-free backward against its peers, same residual, width, batch and depth.

Groups (each method's time and gradient are compared with the *baseline* named in its row,
measured in the same run; every method of a group starts from identical weights):

* ``resnet`` (x += h f(x)): plain backprop (the reference), ``torch.utils.checkpoint`` per
  layer and every √N layers, odedsl ``euler`` in store and invert, torchdiffeq ``odeint``
  (fixed-step Euler on the same N-step grid) and ``odeint_adjoint`` (baseline: ``odeint``);
* ``heun``: odedsl ``heun`` store/invert; torchdiffeq ``midpoint`` (the two-evaluation
  fixed-step solver it has) with and without adjoint. ``--rk4`` adds odedsl ``rk4`` against
  torchdiffeq ``rk4`` (its 3/8-rule variant);
* ``momentum`` (v = γv + (1−γ)f(x); x += v): momentumnet's ``MomentumNet`` with backprop
  (the baseline) and without (its memory-free mode), odedsl ``momentum`` store and invert;
* ``coupling`` (x1 += F(x2); x2 += G(x1)): a plain loop (baseline), memcnn
  ``AdditiveCoupling`` in ``InvertibleModuleWrapper``, odedsl ``additive_coupling``;
* ``hamiltonian``, ``midpoint``, ``leapfrog``: odedsl store (baseline) and invert.

Gradient errors (batch ``--grad-batch``): in float64 against the baseline (what the method
itself adds), the float32 step against the baseline's float64 gradient (what a float32 user
gets: rounding plus the method's error; the baseline's own row shows the rounding alone), and
the float32 step against the baseline's float32 step (what the method adds in float32).

Usage (from the repository root; peers: ``pip install --no-deps momentumnet memcnn
torchdiffeq``, see ``benchmarks/README.md``)::

    python -m benchmarks.peers                # N ∈ {16, 128, 1024}, ~10 min on 2 cores
    python -m benchmarks.peers --quick        # CI sizes
    python -m benchmarks.peers --device cuda  # allocator peaks instead of saved bytes

A peer that cannot be imported is skipped with a note in the table and the JSON.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from benchmarks.common import (
    STEP_FREE,
    Case,
    Clock,
    Residual,
    add_run_options,
    check_split_width,
    configure_threads,
    cuda_step_bytes,
    finish_run_options,
    flat_grads,
    fmt_bytes,
    fmt_err,
    fmt_ratio,
    machine_description,
    markdown_table,
    median,
    plot_groups,
    relative_error,
    result_tag,
    saved_bytes,
    time_round_robin,
    train_step,
    write_json,
    write_partial,
)
from odedsl.cli.argtypes import ScriptParser
from odedsl.integrators import standard_library
from odedsl.runtime import OdeStage, WeightSchedule

PEERS = ("momentumnet", "memcnn", "torchdiffeq")
GROUPS = ("resnet", "heun", "rk4", "momentum", "coupling", "hamiltonian", "midpoint", "leapfrog")
#: The odedsl integrator of each group not named after its own.
GROUP_INTEGRATOR = {"resnet": "euler", "coupling": "additive_coupling"}


def import_peers() -> tuple[dict[str, Any], dict[str, str]]:
    """Importable peers, and why the others are not (missing, or broken with this torch)."""
    found: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name in PEERS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # memcnn: torch.cuda.amp deprecation warnings
                found[name] = importlib.import_module(name)
        except Exception as exc:  # ImportError, or any error a peer raises at import
            missing[name] = f"{type(exc).__name__}: {exc}"
    return found, missing


# ----------------------------------------------------------------------------- weights
@dataclass
class Bank:
    """The initial residual weights of a group: ``slots`` copies of F (and of G)."""

    f: list[nn.Module]
    g: list[nn.Module]

    def copy(self, dtype: torch.dtype, device: str) -> Bank:
        return Bank(
            [copy.deepcopy(m).to(dtype=dtype, device=device) for m in self.f],
            [copy.deepcopy(m).to(dtype=dtype, device=device) for m in self.g],
        )

    def layer(self, which: list[nn.Module], n: int) -> nn.Module:
        """Layer ``n``'s module: the one module when tied, else the n-th."""
        return which[0] if len(which) == 1 else which[n]


def make_bank(
    slots: int, width: int, residual: Residual, two: bool, seed: int, scale: float | None = None
) -> Bank:
    torch.manual_seed(seed)
    f = [residual.module(width, scale) for _ in range(slots)]
    g = [residual.module(width, scale) for _ in range(slots)] if two else []
    return Bank(f, g)


def grads_of(modules: Sequence[nn.Module]) -> Callable[[], list[Tensor | None]]:
    """Gradients of ``modules``' parameters in order (the canonical order of a group)."""
    return lambda: [p.grad for m in modules for p in m.parameters()]


# ----------------------------------------------------------------------------- odedsl
def odedsl_stage(
    integrator: str, depth: int, bank: Bank, mode: str, weights: str, gamma: float
) -> OdeStage:
    """An odedsl stage whose residual slots hold the bank's weights."""
    decl = standard_library()[integrator]
    program = decl.program({"gamma": gamma} if integrator == "momentum" else None)
    modules = {"f": bank.f, "g": bank.g}
    stage = OdeStage(
        integrator,
        program,
        {r: (lambda r=r: copy.deepcopy(modules[r][0])) for r in program.residuals},
        depth=depth,
        schedule=WeightSchedule(weights),
        backward=mode,
    )
    for r in program.residuals:
        slots = stage.residual_modules(r)
        if len(slots) != len(modules[r]):
            raise ValueError(f"{integrator}: {len(slots)} slots but a bank of {len(modules[r])}")
        for slot, src in zip(slots, modules[r], strict=True):
            slot.load_state_dict(src.state_dict())
    return stage.to(next(iter(bank.f[0].parameters())).device)


def odedsl_case(
    name: str, group: str, integrator: str, mode: str, depth: int, bank: Bank, args: Any
) -> Case:
    stage = odedsl_stage(integrator, depth, bank, mode, args.weights, args.gamma)
    modules = [m for r in stage.program.residuals for m in stage.residual_modules(r)]
    return Case(name, group, stage, stage, grads_of(modules))


# ----------------------------------------------------------------------------- plain loops
class EulerLoop(nn.Module):
    """Plain backprop ResNet x += h f_n(x), optionally ``torch.utils.checkpoint``-ed."""

    def __init__(self, bank: Bank, depth: int, every: int | None) -> None:
        super().__init__()
        self.fs = nn.ModuleList(bank.f)
        self.depth, self.h, self.every = depth, 1.0 / depth, every

    def layers(self, x: Tensor, start: int, stop: int) -> Tensor:
        for n in range(start, stop):
            f = self.fs[0] if len(self.fs) == 1 else self.fs[n]
            x = x + self.h * f(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if self.every is None:
            return self.layers(x, 0, self.depth)
        for start in range(0, self.depth, self.every):
            stop = min(start + self.every, self.depth)
            x = checkpoint(self.layers, x, start, stop, use_reentrant=False)
        return x


class CouplingLoop(nn.Module):
    """Plain backprop additive coupling (RevNet): x1 += F(x2); x2 += G(x1)."""

    def __init__(self, bank: Bank, depth: int) -> None:
        super().__init__()
        self.fs, self.gs, self.depth = nn.ModuleList(bank.f), nn.ModuleList(bank.g), depth

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.chunk(x, 2, dim=1)
        tied = len(self.fs) == 1
        for n in range(self.depth):
            x1 = x1 + (self.fs[0] if tied else self.fs[n])(x2)
            x2 = x2 + (self.gs[0] if tied else self.gs[n])(x1)
        return torch.cat([x1, x2], dim=1)


# ----------------------------------------------------------------------------- peers
class ODEFunc(nn.Module):
    """torchdiffeq's ``func(t, y)``: the residual at time t (weights of layer ⌊tN⌋ if untied).

    With untied weights the adjoint's reverse solve evaluates each step at its right end
    t_{n+1}, i.e. with layer n+1's weights: its parameter gradients land one layer late.
    """

    def __init__(self, bank: Bank, depth: int) -> None:
        super().__init__()
        self.fs, self.depth = nn.ModuleList(bank.f), depth
        self.calls = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        if len(self.fs) == 1:
            return self.fs[0](y)
        n = min(max(math.floor(float(t) * self.depth + 1e-6), 0), self.depth - 1)
        return self.fs[n](y)


def torchdiffeq_case(
    tdq: Any, name: str, group: str, method: str, adjoint: bool, depth: int, bank: Bank
) -> Case:
    func = ODEFunc(bank, depth)
    device = next(iter(func.parameters())).device

    def grid(_f: Any, _y0: Tensor, t: Tensor) -> Tensor:
        return torch.linspace(float(t[0]), float(t[-1]), depth + 1, dtype=t.dtype, device=device)

    def forward(x: Tensor) -> Tensor:
        t = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
        opts = {"grid_constructor": grid}
        if adjoint:
            ys = tdq.odeint_adjoint(
                func, x, t, method=method, options=opts, adjoint_params=tuple(func.parameters())
            )
        else:
            ys = tdq.odeint(func, x, t, method=method, options=opts)
        return ys[-1]

    return Case(name, group, func, forward, grads_of(list(func.fs)))


def momentumnet_case(mn: Any, name: str, depth: int, bank: Bank, gamma: float, bp: bool) -> Case:
    functions = [bank.layer(bank.f, n) for n in range(depth)]
    net = mn.MomentumNet(functions, gamma=gamma, use_backprop=bp)
    return Case(name, "momentum", net, net, grads_of(bank.f))


def memcnn_case(memcnn: Any, name: str, depth: int, bank: Bank) -> Case:
    blocks = nn.ModuleList()
    couplings: dict[int, nn.Module] = {}
    for n in range(depth):
        f, g = bank.layer(bank.f, n), bank.layer(bank.g, n)
        if id(f) not in couplings:
            couplings[id(f)] = memcnn.AdditiveCoupling(f, g, split_dim=1)
        blocks.append(memcnn.InvertibleModuleWrapper(couplings[id(f)], keep_input=False))

    def forward(x: Tensor) -> Tensor:
        for block in blocks:
            x = block(x)
        return x

    return Case(name, "coupling", blocks, forward, grads_of([*bank.f, *bank.g]))


# ----------------------------------------------------------------------------- the cases
@dataclass
class Spec:
    """How to build a case from its group's bank, and what it is compared with."""

    name: str
    group: str
    baseline: str
    build: Callable[[Bank], Case]
    note: str = ""


def specs_at(depth: int, args: Any, peers: dict[str, Any]) -> list[Spec]:
    """Every case at one depth (those of missing peers left out)."""
    every = max(1, round(math.sqrt(depth)))
    out: list[Spec] = []

    def add(name: str, group: str, baseline: str, build: Callable[[Bank], Case], note: str = ""):
        out.append(Spec(name, group, baseline, build, note))

    def od(integrator: str, mode: str, group: str) -> Callable[[Bank], Case]:
        label = f"odedsl {integrator} {mode}"
        return lambda b: odedsl_case(label, group, integrator, mode, depth, b, args)

    tdq = peers.get("torchdiffeq")
    g = "resnet"
    if g in args.groups:
        plain = "plain backprop"
        add(plain, g, plain, lambda b: _loop_case(plain, b, depth, None))
        add("checkpoint every layer", g, plain, lambda b: _loop_case("ckpt1", b, depth, 1))
        add(
            "checkpoint every √N layers",
            g,
            plain,
            lambda b: _loop_case("ckptk", b, depth, every),
            f"k = {every}",
        )
        add("odedsl euler store", g, plain, od("euler", "store", g))
        add("odedsl euler invert", g, plain, od("euler", "invert", g), "approximate inverse")
        if tdq is not None:
            add("torchdiffeq odeint euler", g, plain, _td(tdq, "euler", False, depth, g))
            add(
                "torchdiffeq odeint_adjoint euler",
                g,
                "torchdiffeq odeint euler",
                _td(tdq, "euler", True, depth, g),
            )
    for g, integrator, method in (("heun", "heun", "midpoint"), ("rk4", "rk4", "rk4")):
        if g not in args.groups:
            continue
        ref = f"odedsl {integrator} store"
        add(ref, g, ref, od(integrator, "store", g))
        add(f"odedsl {integrator} invert", g, ref, od(integrator, "invert", g), "approximate")
        if tdq is not None:
            plain_td = f"torchdiffeq odeint {method}"
            add(plain_td, g, plain_td, _td(tdq, method, False, depth, g))
            add(
                f"torchdiffeq odeint_adjoint {method}",
                g,
                plain_td,
                _td(tdq, method, True, depth, g),
            )
    g = "momentum"
    if g in args.groups:
        mn = peers.get("momentumnet")
        ref = "momentumnet backprop" if mn is not None else "odedsl momentum store"
        if mn is not None:
            add(ref, g, ref, lambda b: momentumnet_case(mn, ref, depth, b, args.gamma, True))
        add("odedsl momentum store", g, ref, od("momentum", "store", g))
        add("odedsl momentum invert", g, ref, od("momentum", "invert", g), "exact-unstable")
        if mn is not None:
            add(
                "momentumnet memory-free",
                g,
                ref,
                lambda b: momentumnet_case(
                    mn, "momentumnet memory-free", depth, b, args.gamma, False
                ),
            )
    g = "coupling"
    if g in args.groups:
        ref = "plain coupling loop"
        add(ref, g, ref, lambda b: _coupling_case(ref, b, depth))
        add("odedsl additive_coupling store", g, ref, od("additive_coupling", "store", g))
        add("odedsl additive_coupling invert", g, ref, od("additive_coupling", "invert", g))
        memcnn = peers.get("memcnn")
        if memcnn is not None:
            add(
                "memcnn InvertibleModuleWrapper",
                g,
                ref,
                lambda b: memcnn_case(memcnn, "memcnn", depth, b),
            )
    for g in ("hamiltonian", "midpoint", "leapfrog"):
        if g in args.groups:
            ref = f"odedsl {g} store"
            add(ref, g, ref, od(g, "store", g))
            add(f"odedsl {g} invert", g, ref, od(g, "invert", g))
    return out


def _loop_case(name: str, bank: Bank, depth: int, every: int | None) -> Case:
    loop = EulerLoop(bank, depth, every)
    return Case(name, "resnet", loop, loop, grads_of(bank.f))


def _coupling_case(name: str, bank: Bank, depth: int) -> Case:
    loop = CouplingLoop(bank, depth)
    return Case(name, "coupling", loop, loop, grads_of([*bank.f, *bank.g]))


def _td(tdq: Any, method: str, adjoint: bool, depth: int, group: str) -> Callable[[Bank], Case]:
    name = f"torchdiffeq {'odeint_adjoint' if adjoint else 'odeint'} {method}"
    return lambda b: torchdiffeq_case(tdq, name, group, method, adjoint, depth, _first_n(b, depth))


def _first_n(bank: Bank, depth: int) -> Bank:
    """torchdiffeq's piecewise-constant weights use the first N slots (N+1 for Heun's)."""
    return bank if len(bank.f) == 1 else Bank(bank.f[:depth], bank.g[:depth])


def bank_for(group: str, depth: int, residual: Residual, args: Any) -> Bank:
    """The group's initial weights: as many slots as the odedsl stage of the group has."""
    integrator = GROUP_INTEGRATOR.get(group, group)
    decl = standard_library()[integrator]
    slots = WeightSchedule(args.weights).slots(depth, decl.offsets)
    width = residual.width // 2 if decl.split_channels else residual.width
    scale = 1.0 / depth if integrator in STEP_FREE and not args.unscaled else None
    return make_bank(slots, width, residual, len(decl.residuals) == 2, args.seed, scale)


# ----------------------------------------------------------------------------- running
def _built(spec: Spec, bank: Bank) -> Case:
    case = spec.build(bank)
    case.name, case.group = spec.name, spec.group
    return case


def run_depth(
    depth: int, args: Any, residual: Residual, peers: dict[str, Any], log: Any
) -> list[dict[str, Any]]:
    device = args.device
    specs = specs_at(depth, args, peers)
    banks = {g: bank_for(g, depth, residual, args) for g in dict.fromkeys(s.group for s in specs)}
    cases = [_built(s, banks[s.group].copy(torch.float32, device)) for s in specs]
    x = residual.input(dtype=torch.float32, device=device, seed=args.seed).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # memcnn sets .grad of non-leaf tensors
        samples = time_round_robin(
            cases,
            x,
            Clock(args.clock, device),
            repeat=args.repeat,
            min_repeat=args.min_repeat,
            budget_s=args.budget,
            progress=lambda m: log(f"  N={depth}: {m}"),
        )
        gx = residual.input(args.grad_batch, dtype=torch.float64, device=device, seed=args.seed + 1)

        def gradients(dtype: torch.dtype) -> dict[str, list[Tensor]]:
            """Every method's gradient of one step on ``gx`` with its bank in ``dtype``."""
            out = {}
            for s in specs:
                case = _built(s, banks[s.group].copy(dtype, device))
                xx = gx.detach().to(dtype).requires_grad_()
                train_step(case, xx, None)
                out[s.name] = flat_grads(case, xx)
            return out

        grads = gradients(torch.float64)
        # the same step in float32, against the exact (float64) gradient of the baseline:
        # rounding plus whatever the method adds (issue target: exact modes <= 1e-5 at N=1024)
        grads32 = gradients(torch.float32)
        rows = []
        for s, case in zip(specs, cases, strict=True):
            t = median(samples[s.name])
            mem = saved_bytes(case.forward, x, case.params())
            row: dict[str, Any] = {
                "group": s.group,
                "method": s.name,
                "depth": depth,
                "baseline": s.baseline,
                "time_s": t,
                "time_samples_s": samples[s.name],
                "saved_bytes": mem,
                "grad_err_float64": relative_error(grads[s.name], grads[s.baseline]),
                "grad_err_float32": relative_error(grads32[s.name], grads[s.baseline]),
                "grad_err_float32_vs_baseline": relative_error(
                    grads32[s.name], grads32[s.baseline]
                ),
                "note": s.note,
            }
            if device.startswith("cuda"):
                row["cuda_step_bytes"] = cuda_step_bytes(case, x)
            rows.append(row)
    by = {r["method"]: r for r in rows}
    plain = by.get("plain backprop")
    for r in rows:
        base = by[r["baseline"]]
        r["time_ratio"] = r["time_s"] / base["time_s"]
        r["saved_ratio"] = r["saved_bytes"] / base["saved_bytes"] if base["saved_bytes"] else None
        r["time_vs_plain_resnet"] = r["time_s"] / plain["time_s"] if plain else None
    return rows


def table(rows: list[dict[str, Any]], missing: dict[str, str]) -> str:
    header = [
        "group",
        "method",
        "N",
        "step",
        "time ×",
        "saved bytes",
        "bytes ×",
        "grad err f64",
        "f32 vs exact",
        "f32 vs baseline f32",
        "baseline",
        "note",
    ]
    body = [
        [
            r["group"],
            r["method"],
            str(r["depth"]),
            f"{r['time_s'] * 1e3:.1f} ms",
            fmt_ratio(r["time_ratio"]),
            fmt_bytes(r["saved_bytes"]),
            "—" if r["saved_ratio"] is None else f"{r['saved_ratio']:.3g}×",
            fmt_err(r["grad_err_float64"]) if r["method"] != r["baseline"] else "(ref)",
            fmt_err(r["grad_err_float32"]),
            fmt_err(r["grad_err_float32_vs_baseline"]) if r["method"] != r["baseline"] else "(ref)",
            r["baseline"] if r["method"] != r["baseline"] else "—",
            r["note"],
        ]
        for r in sorted(rows, key=lambda r: (GROUPS.index(r["group"]), r["depth"]))
    ]
    text = markdown_table(header, body)
    for name, why in missing.items():
        text += f"\n\nskipped {name}: not importable ({why})"
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ScriptParser(prog="python -m benchmarks.peers", description=__doc__.split("\n")[0])
    add_run_options(p, depths="16 128 1024", weights="tied")
    p.add_argument("--groups", nargs="+", default=None, choices=GROUPS)
    p.add_argument("--rk4", action="store_true", help="add the rk4 group (4 evaluations a step)")
    args = p.parse_args(argv)
    finish_run_options(args, [4, 32], [16, 128, 1024])
    if args.groups is None:
        args.groups = [g for g in GROUPS if g != "rk4" or args.rk4]
    check_split_width(p, args.width, (GROUP_INTEGRATOR.get(g, g) for g in args.groups))
    return args


def main(argv: Sequence[str] | None = None, log: Any = print) -> dict[str, Any]:
    args = parse_args(argv)
    configure_threads(args.threads or None)
    peers, missing = import_peers()
    residual = Residual(
        args.residual, args.width, args.hidden, args.batch, args.size, args.activation
    )
    machine = machine_description(args.device)
    machine["peers"] = {n: getattr(m, "__version__", "?") for n, m in peers.items()}
    log(f"peers: {residual.describe()}, weights {args.weights}, depths {args.depths}")
    log(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['threads']} thread(s)")
    for name, why in missing.items():
        log(f"skipping {name}: {why}")
    rows: list[dict[str, Any]] = []
    tag = result_tag(args)
    for depth in args.depths:
        rows += run_depth(depth, args, residual, peers, log)
        partial = write_partial(args.out, f"peers-{tag}", argv, rows)
    text = table(rows, missing)
    log(text)
    machine["load_average_end"] = machine_description(args.device).get("load_average")
    payload = {
        "benchmark": "peers",
        "command": "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "residual": residual.describe(),
        "clock": args.clock,
        "skipped": missing,
        "rows": rows,
        "table": text,
    }
    write_json(args.out / f"peers-{tag}.json", payload)
    partial.unlink(missing_ok=True)
    if not args.no_plot:
        plot(payload, args.out / f"peers-{tag}.png")
    return payload


def plot(payload: dict[str, Any], path: Path) -> bool:
    """The PNG of a peers payload: a column per group."""
    groups: dict[str, dict[str, dict[int, tuple[float, float]]]] = {}
    for r in payload["rows"]:
        groups.setdefault(r["group"], {}).setdefault(r["method"], {})[r["depth"]] = (
            r["saved_bytes"],
            r["time_s"],
        )
    m = payload["machine"]
    title = (
        f"odedsl vs peers — {payload['residual']}, weights {payload['config']['weights']}, "
        f"{m['cpu']}, {m['threads']} thread(s), {payload['clock']} time"
    )
    return plot_groups(path, groups, title)


if __name__ == "__main__":
    main()
