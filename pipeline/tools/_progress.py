"""A progress bar over shards on stderr (so that stdout stays clean for --json and problem lists)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Advance", "shard_progress"]


class Advance(Protocol):
    def __call__(self, n: int = 1, label: str | None = None) -> None: ...


@contextlib.contextmanager
def shard_progress(total: int, description: str, enabled: bool = True) -> Iterator[Advance]:
    """Yields ``advance(n=1, label=None)``; the bar disappears when done (the summary follows)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shards"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}"),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )
    with progress:
        task = progress.add_task(description, total=total, label="")

        def advance(n: int = 1, label: str | None = None) -> None:
            progress.update(task, advance=n, label=label or "")

        yield advance
