"""``train(spec, data=..., epochs=...) -> TrainResult``: the Python face of ``odedsl train``.

Options left at ``None`` take the defaults of :class:`TrainConfig`, or, when resuming, the
values the checkpoint was written with; an option given explicitly that differs from the
checkpoint is refused (a resumed run continues the same training, it does not start another).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from odedsl.checkpoints import weights_file
from odedsl.diagnostics import DslError, by_face, option
from odedsl.spec.evaluate import Value
from odedsl.spec.fingerprint import network_fingerprint
from odedsl.training.checkpoint import (
    CHECKPOINT,
    another_out,
    atomic_save,
    atomic_write_text,
    damaged,
    load_checkpoint,
    same_network,
)
from odedsl.training.config import (
    RESUME_KEYS,
    STRETCHABLE,
    TrainConfig,
    TrainResult,
    bad_option,
    check_option,
    resolve_device,
    wrong_type,
)
from odedsl.training.data import TensorPairs, load_data
from odedsl.training.loop import Trainer, evaluate
from odedsl.training.model import FittedSpec, SpecSource, build_model, fit_spec

AUTO = "auto"


def default_out(network: str, root: Path = Path("runs")) -> Path:
    return root / f"{network}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run(network: str, root: Path = Path("runs")) -> Path | None:
    """The newest ``runs/<network>-*`` folder holding a checkpoint (``--resume`` alone)."""
    found = sorted(p for p in root.glob(f"{network}-*") if (p / CHECKPOINT).is_file())
    return found[-1] if found else None


def train(
    spec: SpecSource,
    *,
    data: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    weight_decay: float | None = None,
    device: str | None = None,
    backward: str | None = None,
    amp: bool | None = None,
    compile: bool | None = None,
    seed: int | None = None,
    checkpoint_every: int | None = None,
    workers: int | None = None,
    overrides: dict[str, Value] | None = None,
    network: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> TrainResult:
    """Train ``spec`` on ``data`` and return the result; writes files only when ``out`` is
    given (``"auto"``: ``runs/<network>-<timestamp>``). ``resume`` continues the checkpoint
    in ``out`` exactly (``out="auto"``: the newest run of this network). A wrong type is a
    TypeError, a value out of range a ValueError, both naming the argument (and DslErrors)."""
    _check_arguments(data, out, resume, progress, overrides)
    given = {
        "data": None if data is None else str(data),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "device": device,
        "backward": backward,
        "amp": amp,
        "compile": compile,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        "workers": workers,
    }
    explicit = {k: v for k, v in given.items() if v is not None}
    for key, value in explicit.items():  # before a checkpoint is compared or anything loaded
        check_option(key, value)
    overrides = dict(overrides or {})
    spec_name = str(spec) if not hasattr(spec, "network") else spec.network.name  # type: ignore[union-attr]
    out_dir = None if out is None or str(out) == AUTO else Path(out)
    ckpt: dict[str, Any] | None = None
    if resume:
        if out is None:
            raise bad_option(
                "resume=True needs out, the folder of the run to continue",
                f"pass out=DIR, the run's folder, or out={AUTO!r} for the newest run of this "
                "network under runs/",
                "E130",
            )
        if out_dir is None:  # auto: newest run of this network, found once the spec is known
            out_dir = _auto_resume_dir(spec, overrides, network)
        ckpt = load_checkpoint(out_dir / CHECKPOINT)
        saved = ckpt["config"]
        for key, value in explicit.items():
            if key in RESUME_KEYS and key not in STRETCHABLE and saved.get(key, value) != value:
                _refuse_change(key, value, saved[key], out_dir)
        done, wanted = ckpt.get("epoch"), explicit.get("epochs", saved["epochs"])
        if wanted != saved["epochs"] and isinstance(done, int) and wanted < done:
            raise bad_option(
                f"{option('epochs', wanted)} is fewer than the {done} epochs the checkpoint "
                f"in '{out_dir}' completed",
                f"resume with {option('epochs', done)} or more (the cosine schedule is stretched "
                "to the new end from the step reached)",
                "E130",
            )
        saved_overrides = ckpt.get("overrides", {})
        for name, value in overrides.items():
            if saved_overrides.get(name, _UNSET) != value:
                was = saved_overrides.get(name, _UNSET)
                _refuse_change(name, value, was, out_dir, override=True)
        explicit = {**saved, **explicit}
        overrides = {**saved_overrides, **overrides}
    try:
        cfg = TrainConfig(**explicit)
    except DslError as err:
        if ckpt is None:
            raise
        (first,) = err.diagnostics[:1]
        raise damaged(f"checkpoint '{out_dir / CHECKPOINT}'", "config", first.message) from None
    resolve_device(cfg.device)  # refused (no GPU) before any folder is made for the run
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise bad_option(
            f"{_out(out_dir)} is a file, not a folder",
            "name a folder for the run's model, log and checkpoints",
            "E130",
        )
    if not resume and out_dir is not None and (out_dir / CHECKPOINT).exists():
        raise bad_option(
            f"{_out(out_dir)} already holds a run (checkpoint.pt)",
            f"pass {option('resume', True)} to continue it, or choose {another_out()}",
            "E130",
        )
    bundle = load_data(
        cfg.data, channels=_int(overrides.get("channels")), size=_int(overrides.get("size"))
    )
    fitted = fit_spec(spec, bundle, overrides, network)
    fingerprint = network_fingerprint(fitted.spec.network)
    if ckpt is not None:
        _check_same_network(ckpt, fitted.name, fingerprint, out_dir)
    if out is not None and out_dir is None:
        out_dir = default_out(fitted.name)
    if out_dir is not None:
        _check_writable(out_dir)
    torch.manual_seed(cfg.seed)
    model = build_model(fitted, backward=cfg.backward)
    shown = console or Console(stderr=True)
    notes = list(bundle.notes)
    if cfg.amp and trainer_device(cfg) != "cuda":
        notes.append(f"{option('amp', True)} applies to CUDA only; training in float32")
    if cfg.workers and isinstance(bundle.train, TensorPairs):
        notes.append(
            f"{option('workers', cfg.workers)} applies to image folders; '{bundle.name}' is "
            "held in memory and read in the training process"
        )
    for note in notes:
        shown.print(f"[yellow]note:[/] {note}")
    if fitted.from_data and progress:
        values = ", ".join(f"{k}={v}" for k, v in fitted.from_data.items())
        shown.print(f"from the data '{bundle.name}': {values}")
    trainer = Trainer(model, bundle.train, bundle.test, cfg, out_dir, shown if progress else None)
    trainer.meta = {"overrides": overrides, "network": fitted.name, "fingerprint": fingerprint}
    trainer.measure_memory()
    if ckpt is not None:
        trainer.restore(ckpt, f"checkpoint '{out_dir / CHECKPOINT}'")
    trainer.on_epoch_end.append(lambda t: _write_log(t, fitted, spec_name, bundle.name, None))
    trainer.run()
    _, train_acc = evaluate(
        trainer.model, bundle.train, trainer.device, cfg.batch_size, workers=cfg.workers
    )
    result = TrainResult(
        model=trainer.model,
        network=fitted.name,
        spec=spec_name,
        data=bundle.name,
        train_accuracy=train_acc,
        test_accuracy=trainer.history[-1]["test_accuracy"],
        seconds=trainer.elapsed,
        parameters=sum(p.numel() for p in trainer.model.parameters()),
        mode=trainer.mode,
        device=str(trainer.device),
        activation_bytes=dict(trainer.memory),
        activation_batch=trainer.memory_batch,
        history=list(trainer.history),
        step_losses=list(trainer.step_losses),
        config=cfg.to_json(),
        params=fitted.params,
        from_data=fitted.from_data,
        overrides=overrides,
        out_dir=out_dir,
    )
    if out_dir is not None:
        # with the stage layouts and weights fingerprint: load_checkpoint checks the network
        atomic_save(weights_file(trainer.model), out_dir / "model.pt")
        _write_log(trainer, fitted, spec_name, bundle.name, result)
    return result


_UNSET = object()
#: What a run writes into its --out folder.
OUTPUTS = (CHECKPOINT, "model.pt", "log.json")


def _check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and write a probe file there before training: a folder under a file
    or a read-only one used to fail at the first checkpoint, after an epoch of work."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise bad_option(
            f"{_out(out_dir)} cannot be written: {err.strerror or err}",
            "name a folder you can write to (it is created if missing)",
            "E130",
        ) from None
    for name in OUTPUTS:
        if (out_dir / name).exists() and not (out_dir / name).is_file():
            raise bad_option(
                f"{_out(out_dir)} holds a '{name}' that is not a file",
                f"remove or rename '{out_dir / name}', or choose {another_out()}",
                "E130",
            )


def _out(out_dir: Path | None) -> str:
    """The run's folder as the caller gave it: ``out='runs/r1'``, ``--out 'runs/r1'``."""
    return by_face(f"--out '{out_dir}'", f"out={str(out_dir)!r}")


def _refuse_change(
    name: str, value: object, was: object, out_dir: Path | None, *, override: bool = False
) -> None:
    """A resumed run continues the same training: an option or ``--set`` value (``override``)
    that differs from the checkpoint's is refused, naming both (``--set stride=2`` used to
    change the network mid-run without a word)."""
    shown = by_face(f"checkpoint's {was}", f"checkpoint's {was!r}")
    if was is _UNSET:
        shown = "checkpoint, which kept the spec's default"
    elif name == "backward" and was is None and not override:
        shown = "checkpoint's each stage's own mode"
    given = by_face(f"{option(name)} {value}", option(name, value))  # CLI: --amp True
    if override:
        given = by_face(f"--set {name}={value}", f"overrides={{{name!r}: {value!r}}}")
    raise bad_option(
        f"{given} differs from the {shown} in '{out_dir}'",
        "a resumed run continues the same training: "
        + by_face("drop the option", "leave it out")
        + f", or start a new run in {another_out()}",
        "E130",
    )


def _check_same_network(
    ckpt: dict[str, Any], name: str, fingerprint: str, out_dir: Path | None
) -> None:
    """The spec given to a resume must build the network the checkpoint trained: another
    spec or ``--network`` with the same parameter shapes (an Euler ResNet's weights in a
    momentum net) used to train on silently."""
    was = ckpt.get("network")
    if was is not None and was != name:
        raise bad_option(
            f"the checkpoint in '{out_dir}' trained network '{was}', this spec builds '{name}'",
            f"resume with the spec (and {by_face('--network', f'network={was!r}')}) of the run "
            f"that wrote it, or start a new run in {another_out()}",
            "E130",
        )
    if same_network(ckpt.get("fingerprint"), fingerprint) is False:
        raise bad_option(
            f"the spec's network '{name}' is not the one the checkpoint in '{out_dir}' trained "
            "(its layers, integrators, depths, weight rules or parameters changed)",
            "resume with the spec file of the run that wrote it, unedited (comments aside), or "
            f"start a new run in {another_out()}",
            "E130",
        )


def _check_arguments(
    data: object, out: object, resume: object, progress: object, overrides: object
) -> None:
    """The arguments ``TrainConfig`` does not hold: TypeError naming the argument."""
    if data is not None and not isinstance(data, str | os.PathLike):
        raise wrong_type("data", "a data set name or a folder (str or path)", data, "'digits'")
    if out is not None and not isinstance(out, str | os.PathLike):
        raise wrong_type("out", f"a folder (str or path) or {AUTO!r}", out, "'runs/r1'")
    for name, flag in (("resume", resume), ("progress", progress)):
        if not isinstance(flag, bool):
            raise wrong_type(name, "True or False", flag, "True")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise wrong_type("overrides", "a dict of network parameters", overrides, "{'depth': 8}")


def trainer_device(cfg: TrainConfig) -> str:
    return resolve_device(cfg.device).type


def _int(value: Value | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _auto_resume_dir(spec: SpecSource, overrides: dict[str, Value], network: str | None) -> Path:
    from odedsl.spec.load import load_spec

    name = load_spec(spec, network=network, **overrides).network.name
    found = latest_run(name)
    if found is None:
        raise bad_option(
            f"{by_face('--resume', f'resume=True, out={AUTO!r}')}: no run of '{name}' with a "
            "checkpoint under runs/",
            f"pass {by_face('--out DIR', 'out=DIR')}, the folder of the run to continue",
            "E110",
        )
    return found


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _write_log(
    trainer: Trainer, fitted: FittedSpec, spec: str, data: str, result: TrainResult | None
) -> None:
    """``log.json``: per-epoch metrics, config, spec, overrides, seed, versions, final scores."""
    if trainer.out_dir is None:
        return
    record: dict[str, Any] = {
        "network": fitted.name,
        "spec": spec,
        "data": data,
        "overrides": fitted.overrides,
        "from_data": fitted.from_data,
        "params": fitted.params,
        "config": trainer.cfg.to_json(),
        "seed": trainer.cfg.seed,
        "torch": torch.__version__,
        "device": str(trainer.device),
        "backward": trainer.mode,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "activation_bytes": trainer.memory,
        "activation_batch": trainer.memory_batch,
        "epochs": trainer.history,
        "step_losses": [_finite(v) for v in trainer.step_losses],
        "seconds": trainer.elapsed,
        "complete": result is not None,
        "final": None
        if result is None
        else {
            "train_accuracy": result.train_accuracy,
            "test_accuracy": result.test_accuracy,
            "seconds": result.seconds,
        },
    }
    atomic_write_text(json.dumps(record, indent=2) + "\n", trainer.out_dir / "log.json")
