"""`odedsl show SPEC`: the validated network as readable tables and equations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from odedsl.cli.common import (
    EXIT_OK,
    FIGURE_SUFFIXES,
    add_spec_arguments,
    check_figure_folder,
    load_from_args,
    print_json,
)

if TYPE_CHECKING:  # pragma: no cover - pydantic's models: imported where a spec is shown
    from odedsl.spec.model import NetworkSpec, SequenceSpec, StageSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="print a spec's network: parts, shapes, parameters, derived inverses",
        description="Print the validated network: each part with its shape and parameter count, "
        "and for each ODE stage its forward update and derived inverse as equations.",
        epilog="examples:\n  odedsl show specs/heunnet.ode\n"
        "  odedsl show specs/resnet.ode --set depth=8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(p, stdin=True)
    p.add_argument("--json", action="store_true", help="print the network summary as JSON")
    p.add_argument("--layers", action="store_true", help="also list every layer of each part")
    p.add_argument(
        "--draw",
        metavar="FILE",
        help="also draw the architecture to FILE (.png, .pdf, .svg; missing folders are made)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.draw is not None:
        _check_draw_target(args.draw)
    spec = load_from_args(args)
    if args.draw:
        _draw(spec.network, args.draw)
        if not args.json:
            print(f"drew {args.draw}", file=sys.stderr)
    if args.json:
        print_json(spec.network.summary())
        return EXIT_OK
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=160)
    render(spec.network, console, layers=args.layers)
    return EXIT_OK


def _check_draw_target(target: str) -> None:
    """``--draw`` names a .png, .pdf or .svg file that is not a folder (matplotlib would
    otherwise append .png to a name without one, writing somewhere else, silently)."""
    from odedsl.diagnostics import Diagnostic, DslError

    path = Path(target)
    if path.suffix.lower() not in FIGURE_SUFFIXES or path.is_dir():
        raise DslError(
            [
                Diagnostic(
                    "E130",
                    f"--draw {target!r}: expected a .png, .pdf or .svg file",
                    None,
                    "e.g. --draw arch.png",
                )
            ]
        )
    check_figure_folder("--draw", target, "arch.png")


def _draw(net: NetworkSpec, target: str) -> None:
    from odedsl.cli.draw import draw_network
    from odedsl.diagnostics import Diagnostic, DslError

    try:
        draw_network(net, target)
    except ImportError:
        raise DslError(
            [Diagnostic("E110", "drawing needs matplotlib", None, "pip install 'odedsl[plot]'")]
        ) from None
    except (OSError, ValueError) as err:
        if isinstance(err, OSError):
            hint = (
                "draw into a folder you may write to (missing ones are made), e.g. --draw arch.png"
            )
        else:  # matplotlib refused the figure: a .png has a pixel limit a vector file has not
            hint = "try a vector format, e.g. --draw arch.svg (a .png has a size limit)"
        raise DslError(
            [Diagnostic("E110", f"cannot write {target!r}: {err}", None, hint)]
        ) from None


def render(net: NetworkSpec, console: Console, *, layers: bool = False) -> None:
    from odedsl.spec.model import StageSpec

    params = ", ".join(f"{k}={v}" for k, v in net.params.items())
    console.print(
        f"[bold]network {net.name}[/bold]({params})  input {net.input_kind}"
        f"{list(net.input_shape)} → {list(net.output_shape)}, "
        f"{net.parameters:,} parameters"
    )
    table = Table(show_header=True, header_style="bold")
    for col in (
        "part",
        "integrator",
        "N",
        "step",
        "weights",
        "backward",
        "inverse",
        "shape",
        "params",
    ):
        table.add_column(col, justify="right" if col in ("N", "params") else "left")
    for part in net.parts:
        if isinstance(part, StageSpec):
            weights = (
                part.weights if part.weights_k is None else f"{part.weights}({part.weights_k})"
            )
            backward = (
                part.backward
                if part.checkpoint_every is None
                else f"checkpoint({part.checkpoint_every})"
            )
            table.add_row(
                part.name,
                part.integrator,
                str(part.depth),
                f"{part.step:.4g}",
                weights,
                backward,
                part.inverse,
                _shape(part.shape),
                f"{part.parameters:,}",
            )
        else:
            table.add_row(
                part.name,
                "",
                "",
                "",
                "",
                "",
                "",
                f"{_shape(part.body.in_shape)} → {_shape(part.body.out_shape)}",
                f"{part.body.parameters:,}",
            )
    console.print(table)
    for part in net.parts:
        if isinstance(part, StageSpec):
            _stage_detail(part, console, layers)
        elif layers:
            console.print(f"[bold]{part.name}[/bold]")
            _layers(part.body, console)


def _stage_detail(stage: StageSpec, console: Console, layers: bool) -> None:
    consts = ", ".join(f"{k}={v:g}" for k, v in stage.integrator_params.items())
    console.print(
        f"\n[bold]stage {stage.name}[/bold]: {stage.integrator}"
        f"{f'({consts})' if consts else ''}, h = {stage.step:.4g}, "
        f"{stage.slots} weight slot(s) per residual, inverse: {stage.inverse}"
    )
    if stage.inverse_reason:
        console.print(f"  ({stage.inverse_reason})")
    console.print("  forward step:")
    for eq in stage.forward_equations:
        console.print(f"    {eq}")
    if stage.inverse_equations:
        console.print("  derived inverse:")
        for eq in stage.inverse_equations:
            console.print(f"    {eq}")
    if stage.inverse_fault:
        console.print(
            f"  at this depth the inverse fails ({stage.inverse_fault}): backward invert is "
            "refused, store and checkpoint never run it",
            markup=False,
        )
    for name, seq in stage.residuals.items():
        console.print(
            f"  residual {name}: {_shape(seq.in_shape)} → {_shape(seq.out_shape)}, "
            f"{seq.parameters:,} parameters per slot"
        )
        if layers:
            _layers(seq, console)


def _layers(seq: SequenceSpec, console: Console) -> None:
    for layer in seq.layers:
        args = ", ".join(f"{k}={v}" for k, v in layer.args.items())
        console.print(
            f"    {layer.name:<10} {layer.kind}({args})  {_shape(layer.out_shape)}  "
            f"[dim]{layer.origin}[/dim]"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


__all__ = ["render", "run"]
