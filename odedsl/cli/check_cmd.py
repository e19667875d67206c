"""`odedsl check SPEC`: validate a spec; exit 0 when valid, 2 when not."""

from __future__ import annotations

import argparse
import sys

from odedsl.cli.common import EXIT_OK, add_spec_arguments, load_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate a spec (syntax, names, shapes, inverses)",
        description="Validate a spec: syntax, names, argument types, shapes through the whole "
        "network, and the inverse each stage's integrator admits.",
        epilog="examples:\n  odedsl check specs/resnet.ode\n"
        "  odedsl check specs/resnet.ode --set depth=256 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(p, stdin=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = load_from_args(args)
    net = spec.network
    if args.json:
        print_json(
            {
                "ok": True,
                "errors": [],
                "warnings": [w.to_json() for w in spec.warnings],
                "network": net.summary(),
            }
        )
        return EXIT_OK
    for w in spec.warnings:
        print(w.render(), file=sys.stderr)
    stages = ", ".join(
        f"{s.name} ({s.integrator}, N={s.depth}, {s.backward_mode}, inverse {s.inverse}"
        f"{', failing at this depth' if s.inverse_fault else ''})"
        for s in net.stages
    )
    print(
        f"ok: network '{net.name}', input {list(net.input_shape)}, "
        f"{net.parameters:,} parameters; stages: {stages}"
    )
    return EXIT_OK
