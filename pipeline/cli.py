"""`pipeline`: build, inspect, verify, show and export sharded action-recognition datasets."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .build.finalize import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from .build.options import POSE_CHOICES, POSES_FPS_HELP, default_of
from .build.plan import DEFAULT_MAX_SAMPLES_PER_SHARD, MIN_SHARDS_PER_SPLIT
from .datasets import DATASETS
from .datasets.ntu import PROTOCOLS
from .errors import plain_warnings, user_errors
from .skeletons import LAYOUT_NAMES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pipeline")
def main() -> None:
    """Turn raw action-recognition videos into sharded training data.

    \b
    Typical use:
      pipeline synth --dataset kinetics --out demo/raw
      pipeline build --dataset kinetics --videos demo/raw/videos \\
          --annotations demo/raw/annotations.csv --classes demo/raw/classes.txt \\
          --pose precomputed --poses demo/raw/skeletons --out demo/shards
      pipeline verify demo/shards
    """
    plain_warnings()


BUILD_EPILOG = f"""\b
Exit status:
  {EXIT_OK}  every planned video was written
  {EXIT_PARTIAL}  some videos failed (errors.parquet), at most --max-error-fraction of them
  {EXIT_FAILED}  more videos failed than that, or no sample was written
  1  the build did not start: bad input, output not writable, pose backend cannot start
  2  command-line usage error
"""


def _parse_pose_options(values: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"expected KEY=VALUE, got {value!r}", param_hint="--pose-option"
            )
        options[key.replace("-", "_")] = _coerce(raw)
    return options


def _coerce(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


@main.command(context_settings=CONTEXT, epilog=BUILD_EPILOG)
@click.option(
    "--dataset",
    required=True,
    type=click.Choice(DATASETS),
    help="Annotation format of the input.",
)
@click.option(
    "--videos", required=True, metavar="URL", help="Folder of videos (local path or s3://...)."
)
@click.option(
    "--annotations", metavar="URL", help="Annotation CSV (or a folder of CSVs). Not needed for ntu."
)
@click.option(
    "--out", required=True, metavar="URL", help="Output dataset root (local path or s3://...)."
)
@click.option(
    "--split",
    metavar="NAMES",
    help="Build only these splits (comma separated). Default: every split in the annotations.",
)
@click.option(
    "--classes",
    metavar="FILE",
    help="Class list, one name per line: its order is the label order; other classes are filtered out.",
)
@click.option(
    "--pose",
    type=click.Choice(POSE_CHOICES),
    default=default_of("pose"),
    show_default=True,
    help="Where keypoints come from.",
)
@click.option(
    "--poses",
    metavar="URL",
    help="Precomputed poses: a folder of kinetics-skeleton .json / NTU .skeleton files, or an mmaction/pyskl .pkl.",
)
@click.option(
    "--poses-fps",
    default=default_of("poses_fps"),
    show_default=True,
    metavar=POSES_FPS_HELP,
    help="Time alignment of kinetics-skeleton files.",
)
@click.option(
    "--layout",
    type=click.Choice(LAYOUT_NAMES),
    help="Convert keypoints to this layout. Default: the source's.",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    help="NTU train/val protocol (default xsub).",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    envvar="RAY_ADDRESS",
    help="Ray cluster to run on: HOST:PORT of its head, ray://HOST:10001 or auto "
    "(default: $RAY_ADDRESS, else start a local Ray).",
)
@click.option(
    "--num-workers",
    type=click.IntRange(min=1),
    help="Parallel shard tasks (and pose actors). Default: CPU count.",
)
@click.option(
    "--samples-per-shard",
    type=click.IntRange(min=1),
    help=f"Videos per shard. Default: min({DEFAULT_MAX_SAMPLES_PER_SHARD}, split size / "
    f"{MIN_SHARDS_PER_SPLIT}), near 256 MB shards at Kinetics scale.",
)
@click.option(
    "--frame-stride",
    type=click.IntRange(min=1),
    default=default_of("frame_stride"),
    show_default=True,
    help="Keep every N-th source frame.",
)
@click.option(
    "--short-side",
    type=click.IntRange(min=16),
    default=default_of("short_side"),
    show_default=True,
    help="Stored frame short side (pixels).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="At most this many videos per split (after shuffling).",
)
@click.option(
    "--seed",
    type=int,
    default=default_of("seed"),
    show_default=True,
    help="Seed of the shard order.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete an existing build in --out and start over (default: resume).",
)
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Reprocess only the videos listed in errors.parquet (after fixing their cause) and "
    "rewrite only the shards that hold them.",
)
@click.option(
    "--max-error-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=default_of("max_error_fraction"),
    show_default=True,
    help="Failed videos / all videos up to which the build exits 3 (partial) rather than 4.",
)
@click.option(
    "--setup-timeout",
    type=click.FloatRange(min=1.0),
    default=default_of("setup_timeout"),
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the first pose actor to start (a cluster may add nodes first).",
)
@click.option(
    "--pose-option",
    "pose_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Pose backend option, e.g. det_config=... for mmpose (repeatable).",
)
@click.option("--verbose", is_flag=True, help="Show the Ray workers' logs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def build(**kwargs: Any) -> None:
    """Build WebDataset shards (rgb, pose, raster) from videos and annotations.

    Resumes by default: a rerun after a crash or Ctrl-C builds only the shards that are
    missing. Bad videos are logged to errors.parquet with their root cause and the build goes
    on; once their cause is fixed, --retry-errors reprocesses only them. Rows filtered on
    purpose (class not in --classes) are listed in filtered.parquet.
    """
    from .build import BuildOptions
    from .build import build as run_build
    from .build.options import OptionError
    from .report import print_build_summary

    quiet = kwargs.pop("quiet")
    pose_options = _parse_pose_options(kwargs.pop("pose_option"))
    options = BuildOptions(**kwargs, pose_options=pose_options)
    try:
        summary = run_build(options, show_progress=not quiet)
    except OptionError as exc:
        raise click.UsageError(str(exc)) from None
    print_build_summary(summary)
    sys.exit(summary.exit_code)


def _register_optional_commands() -> None:
    from .synth.cli import synth
    from .tools import export, inspect_dataset, show, verify

    main.add_command(synth, "synth")
    main.add_command(inspect_dataset, "inspect")
    main.add_command(verify, "verify")
    main.add_command(show, "show")
    main.add_command(export, "export")


_register_optional_commands()
