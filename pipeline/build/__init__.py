"""`pipeline build`: a manifest of videos -> aligned rgb/pose/raster shards, on a Ray cluster.

One job per module:

- :mod:`.options`   what the build is asked for (:class:`BuildOptions`) and its checks
- :mod:`.plan`      which videos go to which shard (a pure function of manifest, seed, options)
- :mod:`.work`      the work of one shard: decode, pose, persons, rasters, write
                    (:func:`build_shard`, usable without Ray)
- :mod:`.runner`    Ray: shard tasks, pose actors, progress
- :mod:`.state`     ``OUT/_build/``: the content fingerprint and the finished shards (resume)
- :mod:`.finalize`  index.parquet, errors.parquet and dataset.json from the shard records
"""

from __future__ import annotations

import time

from ..datasets import AdapterOptions, Manifest, load_manifest
from ..shards import FORMAT_VERSION, RasterParams, remove_temporaries
from ..storage import join
from .finalize import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    BuildSummary,
    IncompleteBuild,
    finalize,
)
from .options import POSE_CHOICES, BuildError, BuildOptions, check_options, default_of
from .plan import ShardSpec, plan_digest, plan_shards
from .runner import ShardRunner, pose_actor_options, shard_task_options
from .state import (
    check_output,
    clear_output,
    done_shards,
    probe_writable,
    read_record,
    save_fingerprint,
)
from .work import LocalPose, ShardContext, ShardRecord, build_shard, retry_shard

__all__ = [
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_FAILED",
    "POSE_CHOICES",
    "BuildError",
    "BuildOptions",
    "BuildSummary",
    "IncompleteBuild",
    "LocalPose",
    "ShardContext",
    "ShardRecord",
    "ShardSpec",
    "build",
    "build_shard",
    "retry_shard",
    "default_of",
    "load_build_manifest",
    "plan_shards",
    "pose_actor_options",
    "shard_context",
    "shard_task_options",
]


def load_build_manifest(options: BuildOptions) -> Manifest:
    """The manifest of the build's inputs (one-line BuildError when they cannot be read)."""
    try:
        manifest = load_manifest(
            options.dataset,
            AdapterOptions(
                videos=options.videos,
                annotations=options.annotations,
                poses=options.poses,
                classes_file=options.classes,
                split=options.split,
                protocol=options.protocol,
            ),
        )
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise BuildError(str(exc).splitlines()[0]) from None
    if not manifest.items:
        raise BuildError(no_usable_videos(manifest))
    return manifest


def no_usable_videos(manifest: Manifest) -> str:
    """Why a manifest has no video to build: what each annotation row became, and the first
    problem named, so the user need not open errors.parquet (which a failed setup never writes)."""
    if manifest.dataset == "ntu":  # no annotation file: the samples are the videos' names
        if not manifest.listed:
            return (
                f"no usable videos: none of the {manifest.unlisted} files under --videos has an "
                "NTU sample name (SsssCcccPpppRrrrAaaa)"
            )
        fates = [f"{manifest.listed} NTU sample names found"]
    else:
        rows = "row" if manifest.listed == 1 else "rows"
        fates = [f"{manifest.listed} annotation {rows} read"]
    if manifest.filtered:
        fates.append(f"{manifest.filtered} outside --classes")
    if manifest.missing:
        fates.append(f"{manifest.missing} without a video under --videos")
    malformed = [e for e in manifest.errors if e.stage == "annotation"]
    if malformed:
        fates.append(f"{len(malformed)} malformed")
    first = (malformed or manifest.errors or [None])[0]
    where = f" (first: {first.source}: {first.reason})" if first else ""
    return f"no usable videos: {', '.join(fates)}{where}"


def _pose_source(options: BuildOptions, manifest: Manifest) -> tuple[str, bool]:
    """(layout, tracked) of the keypoints the pose source gives."""
    if options.pose == "precomputed":
        if manifest.pose_layout is None:
            from ..pose.precomputed import guess_layout

            return guess_layout(options.poses), manifest.person_order == "track"
        return manifest.pose_layout, manifest.person_order == "track"
    # Model backends give COCO-17; mediapipe tracks persons through a video.
    return "coco17", options.pose == "mediapipe"


def shard_context(options: BuildOptions, manifest: Manifest) -> ShardContext:
    """The context every shard task of this build shares."""
    from ..skeletons import can_convert

    pose_layout, tracked = _pose_source(options, manifest)
    layout = options.layout or pose_layout
    if not can_convert(pose_layout, layout):
        raise BuildError(f"cannot convert {pose_layout} keypoints to --layout {layout}")
    return ShardContext(
        out=options.out,
        frame_stride=options.frame_stride,
        short_side=options.short_side,
        poses_fps=options.poses_fps,
        layout=layout,
        pose=options.pose,
        pose_layout=pose_layout,
        pose_tracked=tracked,
        raster=RasterParams(),
    )


def build(options: BuildOptions, show_progress: bool = True) -> BuildSummary:
    """Build (or resume, or retry the failed videos of) a dataset; returns the summary.

    Setup is checked before anything is written: the inputs and options, the output (same
    build or empty, writable) and, for a model pose backend, one pose actor started with its
    real resources. A failure there raises BuildError naming the root cause.
    """
    started = time.monotonic()
    check_options(options)
    manifest = load_build_manifest(options)
    ctx = shard_context(options, manifest)
    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    fingerprint = options.fingerprint() | {
        "classes": manifest.classes,
        "plan_sha256": plan_digest(plan),
        "format_version": FORMAT_VERSION,
    }
    replace = check_output(options, fingerprint)
    probe_writable(options.out)

    summary = BuildSummary(
        out=options.out,
        listed=manifest.listed,
        missing=manifest.missing,
        unlisted=manifest.unlisted,
        filtered=manifest.filtered,
        max_error_fraction=options.max_error_fraction,
    )
    summary.videos = sum(len(s.items) for specs in plan.values() for s in specs)
    todo, retry, videos = _work_left(options, plan, summary, replace)
    runner = ShardRunner(options)
    try:
        if todo:
            runner.start()  # the pose backend's setup check, before anything is written
        if replace:
            clear_output(options.out)
        save_fingerprint(options.out, fingerprint)
        for split in plan:
            remove_temporaries(join(options.out, split))
        if todo:
            runner.run(todo, ctx, show_progress, retry, videos)
    finally:
        runner.close()
    finalize(options, manifest, plan, ctx.layout, ctx.pose_tracked, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _work_left(
    options: BuildOptions,
    plan: dict[str, list[ShardSpec]],
    summary: BuildSummary,
    replace: bool,
) -> tuple[list[ShardSpec], frozenset[tuple[str, int]], int]:
    """(shards to run, those of them to retry, videos to process) on this run (reads only)."""
    todo: list[ShardSpec] = []
    retry: set[tuple[str, int]] = set()
    videos = 0
    for split, specs in plan.items():
        done = set() if replace else done_shards(options.out, split)
        summary.shards += len(specs)
        for spec in specs:
            if spec.number not in done:
                todo.append(spec)
                videos += len(spec.items)
                continue
            summary.shards_resumed += 1
            if not options.retry_errors:
                continue
            record = read_record(options.out, split, spec.number)
            failed = len(record.errors) if record is not None else 0
            if failed:
                todo.append(spec)
                retry.add((split, spec.number))
                videos += failed
                summary.retried += failed
    return todo, frozenset(retry), videos
