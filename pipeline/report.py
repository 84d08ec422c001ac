"""One-screen summaries printed at the end of long commands."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["cpu_model", "human_bytes", "print_build_summary"]


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo), for reports that give timings or results."""
    fallback = platform.processor() or platform.machine() or "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fallback
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else fallback


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def print_build_summary(summary: Any, console: Console | None = None) -> None:
    """The build's one-screen summary: inputs, output, failures by stage and where they are."""
    from .build.finalize import EXIT_OK, EXIT_PARTIAL

    # soft_wrap: the notes below name paths a scheduler's log parser may grep for.
    console = console or Console(stderr=False, soft_wrap=True)
    table = Table(title=f"build summary: {summary.out}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("annotation rows", str(summary.listed))
    table.add_row("filtered (class not in --classes)", str(summary.filtered))
    table.add_row("listed but missing", str(summary.missing))
    table.add_row("present but not listed", str(summary.unlisted))
    table.add_row("videos planned", str(summary.videos))
    if summary.retried:
        table.add_row("videos retried (--retry-errors)", str(summary.retried))
    table.add_row("samples written", str(summary.samples))
    table.add_row("  with no person in any frame", str(summary.no_person))
    by_stage = ", ".join(f"{k} {v}" for k, v in sorted(summary.errors_by_stage.items()))
    failed = f"{summary.failed}" + (f" ({by_stage})" if by_stage else "")
    if summary.failed:
        failed += f", {100 * summary.error_fraction:.1f} % of the videos"
    table.add_row("failed videos", failed)
    for split, counts in sorted(summary.splits.items()):
        table.add_row(
            f"  split {split}",
            f"{counts['samples']} samples, {counts['errors']} errors, "
            f"{counts.get('filtered', 0)} filtered",
        )
    table.add_row("shards", f"{summary.shards} ({summary.shards_resumed} already done)")
    sizes = ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(summary.bytes_by_kind.items()))
    # The samples' member bytes; `pipeline inspect` counts the tar files, headers included.
    table.add_row("payload bytes", sizes or "0")
    table.add_row("time", f"{summary.seconds:.1f} s ({summary.videos_per_second:.2f} videos/s)")
    console.print(table)
    code = summary.exit_code
    if summary.failed:
        console.print(
            f"failed videos are listed with their cause in {summary.out}/<split>/errors.parquet; "
            "after fixing the cause, rerun the same command with --retry-errors"
        )
    if summary.filtered:
        console.print(f"filtered rows are listed in {summary.out}/<split>/filtered.parquet")
    if code == EXIT_OK:
        console.print("exit 0: every planned video was written")
    elif code == EXIT_PARTIAL:
        console.print(
            f"exit {code}: some videos failed, within --max-error-fraction "
            f"{summary.max_error_fraction:g}"
        )
    elif summary.samples == 0:
        console.print(f"exit {code}: no sample was written")
    else:
        console.print(
            f"exit {code}: {100 * summary.error_fraction:.1f} % of the videos failed, more than "
            f"--max-error-fraction {summary.max_error_fraction:g}"
        )
