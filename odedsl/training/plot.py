"""Seed 000, Fig. 3c for any spec: gradient error of ``invert`` against ``store`` vs depth.

:func:`depth_sweep` runs :func:`~odedsl.training.gradcheck.gradient_errors` with every stage
in ``invert`` mode at each depth (the network's ``depth`` parameter), optionally once per
integrator (every stage's ``integrator`` clause swapped, see ``load_with_integrator``);
:func:`plot_sweep` draws one log-log line per (integrator, stage) with the least-squares slope
of log error against log depth in the legend. On ``specs/resnet.ode`` the slopes measured are
about −0.6 for Euler (its reconstruction error falls as 1/N, its gradient error more slowly,
since a slightly wrong state flips some ReLUs) and about −3 for Heun when the weights are
smooth in depth (``init="smooth"``, the default here); exact inverses stay at rounding level.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from odedsl.spec.evaluate import Value
from odedsl.training.gradcheck import StageError, gradient_errors


def depth_sweep(
    spec: str | os.PathLike[str],
    depths: Sequence[int],
    *,
    integrators: Sequence[str | None] = (None,),
    overrides: dict[str, Value] | None = None,
    init: str = "smooth",
    batch: int = 4,
    seed: int = 0,
    network: str | None = None,
    each: Callable[[list[tuple[str | None, int]]], Iterable[tuple[str | None, int]]] = iter,
) -> list[StageError]:
    """Gradient errors of invert vs store (float64) per stage, depth and integrator;
    ``each`` walks the (integrator, depth) points (the CLI's progress bar)."""
    rows: list[StageError] = []
    points = [(integrator, depth) for integrator in integrators for depth in depths]
    for integrator, depth in each(points):
        rows += gradient_errors(
            spec,
            overrides={**(overrides or {}), "depth": depth},
            backward="invert",
            integrator=integrator,
            init=init,
            batch=batch,
            seed=seed,
            network=network,
        )
    return rows


#: A float64 relative gradient error below this is rounding, not the scheme's error: no
#: slope is fitted through it (exact inverses give 1e-16..1e-14, scattered, in any order).
ROUNDING = 1e-13


def fit_slope(depths: Sequence[float], errors: Sequence[float], floor: float = 0.0) -> float | None:
    """Least-squares slope of log(error) against log(depth), over finite points above
    ``floor`` (:data:`ROUNDING` for float64 gradient errors)."""
    pts = [
        (math.log(d), math.log(e))
        for d, e in zip(depths, errors, strict=True)
        if d > 0 and e > max(floor, 0.0) and math.isfinite(e)
    ]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def slope_text(depths: Sequence[float], errors: Sequence[float], inverse: str) -> str:
    """What a sweep's legend and table say of a line: the fitted slope of an approximate
    inverse, over the points above rounding; an exact inverse has no discretisation error
    to fit (a slope through its rounding was noise, of either sign)."""
    if inverse in ("exact", "exact-unstable"):
        return "exact: rounding only"
    slope = fit_slope(depths, errors, ROUNDING)
    if slope is None and all(0 <= e <= ROUNDING for e in errors):
        return "at rounding level: no slope"
    return "slope n/a" if slope is None else f"slope {slope:+.2f}"


def machine() -> str:
    """``CPU`` and, where the platform says, the processor's name."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"CPU ({name})" if name else "CPU"


def plot_sweep(
    rows: Sequence[StageError], path: str | os.PathLike[str], *, title: str, per_stage: bool = True
) -> Path:
    """Write the log-log figure of ``rows`` to ``path`` (PNG, PDF or SVG by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[tuple[str, str], list[StageError]] = {}
    for r in rows:
        if (r.stage == "all") == per_stage:  # per stage, or the whole network only
            continue
        lines.setdefault((r.integrator, r.stage), []).append(r)
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    markers = "osD^v<>ph*"
    floor = 1e-17
    for i, ((integrator, stage), pts) in enumerate(sorted(lines.items())):
        pts = sorted(pts, key=lambda r: r.depth)
        depths = [r.depth for r in pts]
        errors = [r.grad_error for r in pts]
        kind = pts[0].inverse
        label = f"{integrator} · {stage} ({kind})" if len(lines) > 1 else f"{integrator} ({kind})"
        label += ", " + slope_text(depths, errors, kind)
        shown = [max(e, floor) if math.isfinite(e) else float("nan") for e in errors]
        ax.loglog(depths, shown, marker=markers[i % len(markers)], label=label, linewidth=1.6)
    plotted = [r.grad_error for pts in lines.values() for r in pts if math.isfinite(r.grad_error)]
    if plotted:  # whole decades, at least two, so the log axis always has labelled ticks
        lo = math.floor(math.log10(max(min(plotted), floor)))
        hi = max(math.ceil(math.log10(max(max(plotted), floor))), lo + 2)
        ax.set_ylim(10.0**lo, 10.0**hi)
    all_depths = sorted({r.depth for r in rows})
    if all_depths:
        ax.set_xticks(all_depths)
        ax.set_xticklabels([str(d) for d in all_depths])
        ax.minorticks_off()
    ax.set_xlabel("depth N (layers per stage)")
    ax.set_ylabel("relative gradient error ‖g − g_store‖ / ‖g_store‖")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=True)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
