"""`odedsl train SPEC`: train a spec on a data set, with progress, a summary and checkpoints."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from odedsl.cli.argtypes import int_in, real
from odedsl.cli.common import (
    EXIT_OK,
    add_spec_arguments,
    memory_exhausted,
    parse_set,
    print_json,
    report_failure,
)
from odedsl.training.config import DEFAULT_LR, INT_BOUNDS, OPTIMIZERS, TrainConfig

_D = TrainConfig()

EPILOG = f"""examples:
  odedsl train specs/resnet.ode          # digits, {_D.epochs} epochs, ~99% test accuracy
  odedsl train specs/heunnet.ode --set depth=32 --backward invert --epochs 10
  odedsl train specs/resnet.ode --data synthetic --optimizer sgd --lr 0.1 --json
  odedsl train specs/hamiltonian.ode --set depth=64 --compile   # compile time flat in depth
  odedsl train specs/resnet.ode --out runs/r1 --resume   # continue runs/r1 exactly

defaults: --data digits --epochs {_D.epochs} --batch-size {_D.batch_size} \
--optimizer {_D.optimizer} --lr {DEFAULT_LR[_D.optimizer]} (sgd: {DEFAULT_LR["sgd"]}), \
cosine schedule, --seed 0, one CPU thread.
Network parameters named channels, size and classes are set from the data unless --set;
a declared stride shrinks with the image (a 32×32 stem of stride 3 runs 8×8 digits at stride 1).
Outputs in --out (default runs/<network>-<timestamp>): model.pt, log.json, checkpoint.pt.
model.pt holds the weights with what they were trained in (stage layouts, network fingerprint):
load it with odedsl.checkpoints.load_checkpoint(model, path), which checks the network.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network on digits, synthetic data or an image folder",
        description="Train a spec: fits its input to the data, trains with AdamW or SGD and a "
        "cosine schedule, shows a progress bar per epoch and a summary, and writes the model, "
        "a JSON log and checkpoints that resume exactly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(p)
    p.add_argument("--data", help="digits | synthetic | DIR (an image folder; needs torchvision)")
    p.add_argument(
        "--epochs",
        type=int_in(*INT_BOUNDS["epochs"]),
        help=f"passes over the training set ({_D.epochs})",
    )
    p.add_argument(
        "--batch-size",
        type=int_in(*INT_BOUNDS["batch_size"]),
        help=f"samples per step ({_D.batch_size})",
    )
    p.add_argument("--lr", type=real, help="peak learning rate (adamw 0.01, sgd 0.1)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"({_D.optimizer})")
    p.add_argument("--weight-decay", type=real, help=f"on weights, not biases ({_D.weight_decay})")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (auto: cuda when available)")
    p.add_argument(
        "--backward", metavar="MODE", help="store | invert | checkpoint(k) for every stage"
    )
    p.add_argument("--amp", action="store_true", default=None, help="mixed precision (CUDA)")
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the network (each stage compiles its residuals once, any depth)",
    )
    p.add_argument(
        "--seed", type=int_in(*INT_BOUNDS["seed"]), help="seed of weights and batch order (0)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int_in(*INT_BOUNDS["checkpoint_every"]),
        metavar="K",
        help=f"steps between checkpoints ({_D.checkpoint_every}; 0: epochs only)",
    )
    p.add_argument(
        "--threads", type=int_in(1, 1024), metavar="N", help="torch CPU threads (default: 1)"
    )
    p.add_argument(
        "--workers",
        type=int_in(*INT_BOUNDS["workers"]),
        metavar="N",
        help="processes reading an image folder (default 0: the training process)",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<network>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


#: What to change when training runs out of memory: what is kept per step.
TRAIN_MEMORY_HINT = (
    "use a smaller --batch-size, --backward invert or checkpoint(k) (stages then keep fewer "
    "activations for the backward pass), or a smaller depth (--set depth=N)"
)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one: a
    container or ``taskset`` allows fewer than ``os.cpu_count()`` reports)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int | None, command: str) -> None:
    """One CPU thread unless asked: these networks' small convolutions gain little from
    more, and lose badly on a busy machine (OpenMP threads spin while they wait). More
    threads than CPUs is allowed (a shared machine may grow) but warned about on stderr,
    since it is slower, not faster; 0 or fewer is refused."""
    import torch

    if threads is not None and threads < 1:
        from odedsl.training.config import bad_option

        raise bad_option(
            f"--threads {threads}: must be at least 1", "e.g. --threads 1 (the default)"
        )
    cpus = usable_cpus()
    if threads is not None and threads > cpus:
        print(
            f"odedsl {command}: warning: --threads {threads} is more than the {cpus} CPU"
            f"{'s' if cpus != 1 else ''} this process may use; the extra threads wait for "
            f"each other, which is slower, not faster (try --threads {cpus} or fewer)",
            file=sys.stderr,
        )
    torch.set_num_threads(threads or 1)


def run(args: argparse.Namespace) -> int:
    from odedsl.training.api import AUTO, train

    set_threads(args.threads, "train")
    overrides = parse_set(args.overrides)
    console = Console(stderr=True)
    if not console.is_terminal:  # logs and pipes: room for the whole bar on one line
        console = Console(stderr=True, width=120)
    try:
        result = train(
            args.spec,
            data=args.data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            device=args.device,
            backward=args.backward,
            amp=args.amp,
            compile=args.compile,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            workers=args.workers,
            overrides=overrides,
            network=args.network,
            out=args.out or AUTO,
            resume=args.resume,
            progress=not args.quiet,
            console=console,
        )
    except (FloatingPointError, RuntimeError, OSError, MemoryError) as err:  # NaN, memory, disk
        detail = memory_exhausted(err)
        if detail is not None:
            return report_failure(
                "train", f"out of memory ({detail})", TRAIN_MEMORY_HINT, as_json=args.json
            )
        message = (
            str(err) if isinstance(err, FloatingPointError) else f"{type(err).__name__}: {err}"
        )
        return report_failure("train", message, None, as_json=args.json)
    if args.json:
        print_json(result.to_json())
    else:
        from odedsl.training.report import summary_table

        Console().print(summary_table(result))
    return EXIT_OK
