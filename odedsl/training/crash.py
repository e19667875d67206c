"""The training loop's testing hook, ``ODEDSL_TRAIN_CRASH_AFTER=K``: the process ends
(``os._exit(75)``, no cleanup) right after global step K, simulating a kill between
checkpoints. Only the standard library here: every ``odedsl`` command checks the variable
before it runs (:mod:`odedsl.cli.environment`), and ``odedsl check`` should not import the
training loop (torch's compiler with it) to do so."""

from __future__ import annotations

import os

CRASH_ENV = "ODEDSL_TRAIN_CRASH_AFTER"


def crash_after_env() -> int:
    """``ODEDSL_TRAIN_CRASH_AFTER``: the global step after which the testing hook ends the
    process (0 or unset: never); a ValueError naming the variable for anything but digits."""
    raw = os.environ.get(CRASH_ENV, "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ValueError(f"{CRASH_ENV}={raw[:40]!r}: expected a step count (0: off)")
    return int(raw)
