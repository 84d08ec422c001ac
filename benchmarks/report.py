"""What every benchmark script shares: the machine it ran on and its section of a markdown file.

Each script owns the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in
docs/benchmarks.md and replaces only that, so scripts can be rerun one at a time.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.report import cpu_model
from pipeline.storage import write_bytes_atomic

__all__ = ["cpu_model", "load_note", "markdown_table", "write_section"]


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a count of runs, clips or iterations)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def load_note(before: float, after: float, own_threads: int) -> str:
    """The 1-min load average around a run, and whether other work shared the cores."""
    shared = max(before, after) > own_threads + 0.5
    return f"1-min load average {before:.1f} before and {after:.1f} after the run" + (
        " (other jobs shared the machine)" if shared else " (nothing else ran)"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: str | os.PathLike, name: str, body: str) -> None:
    """Replace the ``name`` section of ``path`` (appending it if absent), atomically.

    The file is read just before writing: other benchmarks write their own sections of it.
    """
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
