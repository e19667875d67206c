"""Redraw the PNG of a results JSON (``python -m benchmarks.plot benchmarks/results/*.json``),
e.g. after changing the plotting code, without measuring again."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import modes, peers


def main(argv: Sequence[str] | None = None) -> None:
    for name in sys.argv[1:] if argv is None else argv:
        path = Path(name)
        payload = json.loads(path.read_text(encoding="utf-8"))
        draw = {"modes": modes.plot, "peers": peers.plot}[payload["benchmark"]]
        if draw(payload, path.with_suffix(".png")):
            print(f"wrote {path.with_suffix('.png')}")
        else:
            print("matplotlib is not installed", file=sys.stderr)


if __name__ == "__main__":
    main()
