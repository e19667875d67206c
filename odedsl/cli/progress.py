"""Progress of the commands' depth sweeps (``odedsl plot``, ``odedsl gradcheck --depth-list``).

A sweep of gradient checks up to N = 4096 runs for minutes; without a bar it looks hung. The
bar goes to stderr (stdout keeps the table or ``--json``), weighted by depth, since a check's
cost grows linearly with it, so its time estimate holds for geometric progressions. On a
terminal it is live; in logs and pipes rich prints the finished bar as one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: A point of a sweep: (integrator swapped in, or None for the spec's own; depth or None).
Point = tuple[str | None, int | None]


def sweep_bar(points: Sequence[Point], *, enabled: bool) -> Iterator[Point]:
    """Yield ``points`` in order while a bar shows which is running and how far the sweep is;
    no bar when ``enabled`` is false or there is a single point."""
    if not enabled or len(points) < 2:
        yield from points
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=120)
    weights = [depth or 1 for _, depth in points]
    progress = Progress(
        TextColumn("gradient checks"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[done]}/{task.fields[count]}"),
        TextColumn("{task.fields[now]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        auto_refresh=console.is_terminal,
    )
    with progress:
        task = progress.add_task("sweep", total=sum(weights), done=0, count=len(points), now="")
        for i, (point, weight) in enumerate(zip(points, weights, strict=True)):
            integrator, depth = point
            now = " ".join(x for x in (integrator, None if depth is None else f"N={depth}") if x)
            progress.update(task, done=i, now=now)
            yield point
            progress.update(task, advance=weight, done=i + 1)
        progress.update(task, now="done")
