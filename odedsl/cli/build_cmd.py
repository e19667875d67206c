"""`odedsl build SPEC`: write readable PyTorch code for a network and a script to train it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from odedsl.cli.common import EXIT_ERROR, EXIT_OK, add_spec_arguments, load_from_args

EPILOG = """examples:
  odedsl build specs/heunnet.ode -o out/                  # out/heunnet.py, out/train_heunnet.py
  odedsl build specs/resnet.ode -o out/ --set depth=64 --set width=32
  odedsl build specs/hamiltonian.ode -o out/ --standalone # needs only torch to import
  python out/train_heunnet.py --epochs 1 --samples 256    # train on synthetic data
  python -c "import sys; sys.path.insert(0, 'out'); import heunnet; print(heunnet.build())"
  odedsl build - -o out/ < specs/linear_resnet.ode        # -: the spec from stdin

Files odedsl did not generate, or generated files edited since, are never overwritten
without --force. Exit codes: 0 written, 2 bad spec, option or output path, 1 I/O error.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="write readable PyTorch code for a network (and a training script)",
        description="Compile a spec to <network>.py (one class per stage with its integrator's "
        "step and derived inverse as plain code, the network module, build()) and "
        "train_<network>.py (an editable training script). Outputs, gradients and state_dict "
        "keys equal those of odedsl.compile's module.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(p, stdin=True)
    p.add_argument(
        "-o", "--out", default=".", metavar="DIR", help="output folder (default: current)"
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="copy the odedsl runtime into the file, so it imports nothing but torch",
    )
    p.add_argument("--force", action="store_true", help="overwrite files odedsl did not generate")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from odedsl.export import build

    spec = load_from_args(args)  # a path, even a name with a newline (not spec text), or -
    try:
        paths = build(spec, Path(args.out), standalone=args.standalone, force=args.force)
    except OSError as err:
        print(f"error: cannot write to {args.out}: {err.strerror or err}", file=sys.stderr)
        return EXIT_ERROR
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK
