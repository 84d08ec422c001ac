"""Progress bars for every long command (build, verify, export, training, evaluation): one helper.

tqdm on stderr, so stdout stays clean for ``--json`` output and problem lists. On a terminal the
bar redraws several times a second; in a log file (stderr not a terminal) every 10 s, so CI and
cluster logs get a line now and then instead of thousands.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Advance", "progress_bar", "progress"]


def progress_bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    enabled: bool | None = True,
    iterable: Any = None,
) -> Any:
    """A tqdm bar (``update``, ``set_postfix_str``, ``write``, ``close``), over ``iterable``
    when given; ``enabled=None`` means "when stderr is a terminal". A disabled bar accepts the
    same calls and prints nothing.
    """
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    if enabled is None:
        enabled = interactive
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        mininterval=0.2 if interactive else 10.0,
        dynamic_ncols=interactive,
        leave=False,
        file=sys.stderr,
    )


class Advance(Protocol):
    def __call__(self, n: int = 1, label: str | None = None) -> None: ...


@contextlib.contextmanager
def progress(
    total: int, desc: str, unit: str = "it", enabled: bool | None = True
) -> Iterator[Advance]:
    """Yields ``advance(n=1, label=None)``; the bar disappears when done (a summary follows)."""
    bar = progress_bar(total, desc, unit, enabled)

    def advance(n: int = 1, label: str | None = None) -> None:
        bar.update(n)
        if label is not None:
            bar.set_postfix_str(label, refresh=False)

    try:
        yield advance
    finally:
        bar.close()
