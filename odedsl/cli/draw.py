"""Draw a network's architecture: one box per part, left to right, with shapes on the arrows."""

from __future__ import annotations

from pathlib import Path

from odedsl.spec.model import NetworkSpec, StageSpec

_COLOURS = {"stem": "#dfe7f2", "transition": "#eeeeee", "head": "#dfe7f2"}
_KIND_COLOURS = {
    "exact": "#cdeccd",
    "exact-unstable": "#f6e7b5",
    "approximate": "#f9d9c6",
    "none": "#f2c4c4",
}


def draw_network(net: NetworkSpec, path: str | Path) -> Path:
    """Write a PNG (or any format matplotlib knows by the suffix) of the architecture; its
    folder is made if missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    parts = net.parts
    width, gap = 2.2, 0.9
    fig_w = max(6.0, len(parts) * (width + gap) + 1.0)
    fig, ax = plt.subplots(figsize=(fig_w, 3.2))
    shape = net.input_shape
    ax.annotate(f"input\n{list(shape)}", (0.2, 1.0), ha="center", va="center", fontsize=8)
    x = 0.8
    for part in parts:
        if isinstance(part, StageSpec):
            colour = _KIND_COLOURS[part.inverse]
            weights = (
                part.weights if part.weights_k is None else f"{part.weights}({part.weights_k})"
            )
            label = (
                f"{part.name}\n{part.integrator}, N={part.depth}\n{weights}\n"
                f"{part.backward_mode}\ninverse: {part.inverse}"
            )
            out = part.shape
        else:
            colour = _COLOURS[part.part]
            kinds = [layer.kind for layer in part.body.layers]
            shown = "\n".join(kinds[:4]) + ("\n…" if len(kinds) > 4 else "")
            label = f"{part.name}\n{shown}"
            out = part.body.out_shape
        ax.annotate(
            "",
            xy=(x, 1.0),
            xytext=(x - gap + 0.1, 1.0),
            arrowprops={"arrowstyle": "->", "color": "#555555"},
        )
        ax.add_patch(
            FancyBboxPatch(
                (x, 0.35),
                width,
                1.3,
                boxstyle="round,pad=0.05",
                facecolor=colour,
                edgecolor="#333333",
            )
        )
        ax.text(x + width / 2, 1.0, label, ha="center", va="center", fontsize=7.5)
        ax.text(
            x + width + gap / 2,
            1.15,
            str(list(out)),
            ha="center",
            va="bottom",
            fontsize=6.5,
            color="#333333",
        )
        x += width + gap
    ax.set_xlim(-0.3, x)
    ax.set_ylim(0, 2)
    ax.axis("off")
    ax.set_title(
        f"network {net.name}: {net.parameters:,} parameters (stage colour: inverse kind)",
        fontsize=9,
    )
    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)  # as plot -o and build -o do
    fig.tight_layout()
    fig.savefig(out_path, dpi=150)
    plt.close(fig)
    return out_path
