"""Gate reports: the distribution of the per-video mean gate across test sets and models
(the paper's Figure 4), from ``train eval`` JSON reports.

``train report --series PANEL LABEL REPORT.json ... [--plot PNG]`` prints the distributions
(mean, sd, 10/50/90 percentiles) and draws one panel per test set with one histogram per model,
e.g. IntegralAction with and without L_gate on an in-context and an out-of-context test set.
matplotlib is imported only when a plot is asked for (the ``mediapipe`` extra installs it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipeline import storage
from pipeline.errors import InputNotFound, InvalidInput

from .evaluate import distribution

__all__ = ["load_report", "per_video_gates", "gate_table", "plot_gate_distributions"]


def load_report(path: str) -> dict[str, Any]:
    try:
        with storage.open_file(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise InputNotFound(f"{path}: no such report") from None
    except ValueError as exc:
        raise InvalidInput(f"{path}: not a JSON report ({exc})") from None


def per_video_gates(report: dict[str, Any], what: str = "report") -> list[float]:
    """The per-video mean gates of a gated model's ``train eval`` report."""
    gates = (report.get("gate") or {}).get("per_video")
    if gates is None:
        raise InvalidInput(f"{what} has no per-video gates (not a gated model's train eval report)")
    return [float(g) for g in gates.values()]


def gate_table(series: Sequence[tuple[str, str, list[float]]]) -> list[dict[str, Any]]:
    """One row per (panel, label): the distribution of its per-video gates."""
    return [{"panel": p, "label": lab, **distribution(g)} for p, lab, g in series]


def plot_gate_distributions(
    series: Sequence[tuple[str, str, Sequence[float]]],
    path: str,
    title: str | None = None,
    bins: int = 20,
) -> None:
    """Histograms of per-video mean gates: one panel per distinct panel name (e.g. a test
    set), one outlined histogram per label (e.g. a model) with its mean marked; PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInput(
            "--plot needs matplotlib (pip install matplotlib; the mediapipe extra has it)"
        ) from None
    panels: dict[str, list[tuple[str, Sequence[float]]]] = {}
    for panel, label, gates in series:
        panels.setdefault(panel, []).append((label, gates))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, sharey=True
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(dict.fromkeys(label for _, label, _ in series))
    edges = [i / bins for i in range(bins + 1)]
    for ax, (panel, items) in zip(axes[0], panels.items(), strict=True):
        for label, gates in items:
            colour = colours[labels.index(label) % len(colours)]
            weights = [100.0 / len(gates)] * len(gates) if gates else None
            mean = sum(gates) / len(gates) if gates else float("nan")
            ax.hist(
                gates,
                bins=edges,
                weights=weights,
                histtype="step",
                linewidth=1.8,
                color=colour,
                label=f"{label} (mean {mean:.2f})",
            )
            ax.axvline(mean, color=colour, linestyle="--", linewidth=1)
        ax.set_title(panel)
        ax.set_xlim(0, 1)
        ax.set_xlabel("per-video mean gate G (weight of appearance)")
        # Under the panel: above it the legend hid the tallest bars once the labels grew long.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    axes[0][0].set_ylabel("% of videos")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    data = _png_bytes(fig)
    plt.close(fig)
    storage.write_bytes_atomic(path, data)


def _png_bytes(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")  # keeps legends outside axes
    return buf.getvalue()
