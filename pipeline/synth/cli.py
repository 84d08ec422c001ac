"""``pipeline synth``: write a small synthetic dataset (a click command for the ``pipeline`` group).

pipeline synth --dataset kinetics --out data/synth_k400
pipeline synth --dataset mimetics --out data/synth_mimetics        # out-of-context scenes
pipeline synth --dataset ntu --out data/synth_ntu --persons 2
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from pipeline.errors import InvalidInput, cli_errors
from pipeline.synth.dataset import (
    DATASETS,
    FRAME_SIDE_RANGE,
    SynthError,
    format_summary,
    make_dataset,
)

__all__ = ["synth"]


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if match is None:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 160x120, got {value!r}")
    return int(match.group(1)), int(match.group(2))


@click.command("synth")
@click.option("--dataset", type=click.Choice(DATASETS), required=True, help="Layout to write.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Output directory (created; must be empty unless --overwrite).",
)
@click.option("--num-classes", type=click.IntRange(min=2), default=6, show_default=True)
@click.option("--videos-per-class", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--frames", type=click.IntRange(min=2), default=48, show_default=True)
@click.option(
    "--width", type=click.IntRange(*FRAME_SIDE_RANGE), default=None, help="[default: 160; ntu 320]"
)
@click.option(
    "--height", type=click.IntRange(*FRAME_SIDE_RANGE), default=None, help="[default: 120; ntu 180]"
)
@click.option("--size", callback=_parse_size, default=None, help="WIDTHxHEIGHT, instead of both.")
@click.option(
    "--persons",
    type=click.IntRange(1, 5),
    default=2,
    show_default=True,
    help="Most persons in a video; a quarter of the videos show more than one.",
)
@click.option(
    "--context",
    type=click.Choice(["in", "out"]),
    default=None,
    help="in: each class has its own scene; out: scenes at random [default: in; mimetics out].",
)
@click.option(
    "--context-pairs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Pairs of classes with the same motion, told apart only by their scene.",
)
@click.option(
    "--shared-context",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The last N classes share one scene: only their motion tells them apart.",
)
@click.option(
    "--hidden-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Fraction of videos whose person is hidden or cut off (pose fails there).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.25,
    show_default=True,
    help="Kinetics: fraction of each class in the val split.",
)
@click.option("--fps", type=click.FloatRange(1.0, 240.0), default=30.0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset already in --out.")
@cli_errors("interrupted; --out holds part of a dataset: run again with --overwrite")
def synth(
    dataset: str,
    out_dir: Path,
    num_classes: int,
    videos_per_class: int,
    frames: int,
    width: int | None,
    height: int | None,
    size: tuple[int, int] | None,
    persons: int,
    context: str | None,
    context_pairs: int,
    shared_context: int,
    hidden_fraction: float,
    val_fraction: float,
    fps: float,
    seed: int,
    overwrite: bool,
) -> None:
    """Write a small synthetic dataset in the native layout of --dataset.

    Rendered figures perform class-specific motions over class-specific (in-context) or random
    (out-of-context) scenes; the pose files hold the exact poses that were drawn.
    """
    if size is not None:
        if width is not None or height is not None:
            raise click.UsageError("give either --size or --width/--height, not both")
        width, height = size
    try:
        summary = make_dataset(
            out_dir,
            dataset,
            num_classes=num_classes,
            videos_per_class=videos_per_class,
            frames=frames,
            width=width,
            height=height,
            persons=persons,
            context=context,
            context_pairs=context_pairs,
            shared_context=shared_context,
            hidden_fraction=hidden_fraction,
            val_fraction=val_fraction,
            fps=fps,
            seed=seed,
            overwrite=overwrite,
            progress=True,
        )
    except SynthError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # --debug shows where, through the chain
        where = f" {exc.filename}" if exc.filename else ""
        raise InvalidInput(f"cannot write{where}: {exc.strerror or exc}") from exc
    click.echo(format_summary(summary))
