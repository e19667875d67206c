"""The ``ODEDSL_*`` environment variables, checked before a command runs.

The runtime reads its switches where it uses them, deep inside a forward or backward pass, so
a bad value (``ODEDSL_CHECK_INVERSE=abc``) would surface as a traceback in the middle of
training. Every command checks them all first instead: a bad value is error E130 naming the
variable, and a name odedsl does not read (``ODEDSL_MAX_DEPHT``) is warning W130 with the
nearest known one, since a silently ignored typo is a limit or check that is not in force.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields

from odedsl.diagnostics import Diagnostic, DslError
from odedsl.limits import Limits
from odedsl.runtime.guard import CHECK_FORWARD_ENV, CHECK_INVERSE_ENV, check_inverse_env, env_switch
from odedsl.training.crash import CRASH_ENV, crash_after_env

#: Every variable odedsl reads: the limits, the runtime's checks and the training test hook,
#: and the test suite's (which runs commands under it, and must not be warned about it).
KNOWN = (
    *(f"ODEDSL_{f.name.upper()}" for f in fields(Limits)),
    CHECK_INVERSE_ENV,
    CHECK_FORWARD_ENV,
    CRASH_ENV,
    "ODEDSL_REGEN_GOLDEN",
)


def check_environment() -> list[Diagnostic]:
    """Raise :class:`DslError` (E130) for a bad value of a known variable; return warnings
    (W130) for unknown ``ODEDSL_`` names."""
    Limits.from_env()  # its own E130, with the limit's default in the hint
    errors = []
    for name, parse in (
        (CHECK_INVERSE_ENV, check_inverse_env),
        (CHECK_FORWARD_ENV, lambda: env_switch(CHECK_FORWARD_ENV)),
        (CRASH_ENV, crash_after_env),
    ):
        try:
            parse()
        except ValueError as err:
            errors.append(Diagnostic("E130", f"environment variable {err}", None, _hint(name)))
    if errors:
        raise DslError(errors)
    unknown = sorted(n for n in os.environ if n.startswith("ODEDSL_") and n not in KNOWN)
    return [
        Diagnostic(
            "W130",
            f"environment variable {name} is not one odedsl reads; it has no effect",
            None,
            _suggestion(name),
            "warning",
        )
        for name in unknown
    ]


def _hint(name: str) -> str:
    if name == CHECK_INVERSE_ENV:
        return f"e.g. {name}=1 (check with the default tolerances), {name}=1e-6, or unset it"
    if name == CHECK_FORWARD_ENV:
        return f"e.g. {name}=1, or unset it"
    return f"{name} is a testing hook: a step count (0: off), or unset it"


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.8)
    if close:
        return f"did you mean {close[0]}?"
    return "odedsl reads " + ", ".join(KNOWN)
