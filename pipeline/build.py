"""`pipeline build`: a manifest of videos -> aligned rgb/pose/raster shards, on a Ray cluster.

One Ray CPU task per output shard decodes, renders and writes its videos; pose models live in
Ray actors, loaded once and reused (mediapipe on a CPU core, mmpose on a GPU), so decode, raster
and write never hold a GPU. The shard plan (which videos go to which shard) is a pure function
of the manifest, the seed and the options, so a rerun after a crash rebuilds exactly the shards
that are missing and the result equals an uninterrupted build.

State of a build lives in ``OUT/_build/``: ``options.json`` (what the build was asked for) and
one record per finished shard (``{split}/NNNNNN.json``: index rows, errors, counts), written
after the shard's three tars are in place. ``index.parquet``, ``errors.parquet`` and
``dataset.json`` are assembled from those records at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import __version__, storage
from .dataset_info import (
    DATASET_JSON,
    ERRORS_FIELDS,
    ERRORS_PARQUET,
    INDEX_FIELDS,
    INDEX_PARQUET,
    DatasetInfo,
    RasterParams,
    stored_size,
    write_parquet,
)
from .datasets import AdapterOptions, Manifest, VideoItem, load_manifest
from .shards import KINDS, Sample, ShardSetWriter, remove_temporaries, shard_name

__all__ = [
    "BuildOptions",
    "BuildSummary",
    "ShardSpec",
    "plan_shards",
    "build",
    "BuildError",
    "shard_task_options",
    "pose_actor_options",
]

BUILD_DIR = "_build"
POSE_CHOICES = ("mediapipe", "mmpose", "precomputed")
DEFAULT_MAX_SAMPLES_PER_SHARD = 100  # ~256 MB of rgb at Kinetics scale (~2.5 MB per video)
MIN_SHARDS_PER_SPLIT = 8  # so small datasets still spread over workers and DDP ranks


class BuildError(ValueError):
    """A user mistake that stops the build before it starts (one-line message)."""


@dataclass
class BuildOptions:
    dataset: str
    videos: str
    out: str
    annotations: str | None = None
    split: str | None = None
    classes: str | None = None
    pose: str = "mediapipe"
    poses: str | None = None
    poses_fps: str = "auto"
    layout: str | None = None
    protocol: str | None = None
    ray_address: str | None = None
    num_workers: int | None = None
    samples_per_shard: int | None = None
    frame_stride: int = 2
    short_side: int = 256
    limit: int | None = None
    seed: int = 0
    overwrite: bool = False
    pose_options: dict[str, Any] = field(default_factory=dict)
    max_calls: int = 16  # shard tasks per worker process before Ray recycles it (memory)
    verbose: bool = False

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide the content of the output (compared on resume)."""
        keys = (
            "dataset", "split", "pose", "poses_fps", "layout", "protocol", "samples_per_shard",
            "frame_stride", "short_side", "limit", "seed",
        )  # fmt: skip
        # Pose backend options (model configs and checkpoints) decide the keypoints too.
        pose_options = {k: _describe(v) for k, v in sorted(self.pose_options.items())}
        return {k: getattr(self, k) for k in keys} | {
            "pose_options": pose_options,
            # The code and the plausibility rules in effect (defaults included) decide the
            # keypoints too: a resume under another version or other rules is refused.
            "pipeline_version": __version__,
            "person_rules": self.person_rules(),
        }

    def person_rules(self) -> dict[str, Any] | None:
        """The pose backend's plausibility rules as a dict (None: it applies none)."""
        if self.pose not in ("mediapipe", "mmpose"):
            return None
        from .pose import person_rules

        try:
            rules = person_rules(self.pose, self.pose_options)
        except ValueError as exc:
            raise BuildError(f"--pose-option: {exc}") from None
        return asdict(rules) if rules is not None else None


def _describe(value: Any) -> Any:
    """A JSON value that stands for an option value (objects by their qualified name)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    name = getattr(value, "__qualname__", type(value).__qualname__)
    return f"<{getattr(value, '__module__', type(value).__module__)}.{name}>"


@dataclass
class ShardSpec:
    split: str
    number: int
    items: list[VideoItem]


@dataclass
class BuildSummary:
    out: str
    listed: int = 0
    filtered: int = 0
    missing: int = 0
    unlisted: int = 0
    videos: int = 0  # videos planned in this build (after --limit)
    samples: int = 0
    no_person: int = 0
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_resumed: int = 0
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def videos_per_second(self) -> float:
        return self.videos / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- planning


def _samples_per_shard(n: int, requested: int | None) -> int:
    if requested is not None:
        return requested
    return max(1, min(DEFAULT_MAX_SAMPLES_PER_SHARD, math.ceil(n / MIN_SHARDS_PER_SPLIT)))


def plan_shards(
    manifest: Manifest, seed: int, samples_per_shard: int | None, limit: int | None
) -> dict[str, list[ShardSpec]]:
    """Split -> shards. Order is shuffled with ``seed`` (shards come out ready for training).

    Items are first sorted by key so the plan does not depend on the order files were listed in.
    """
    plan: dict[str, list[ShardSpec]] = {}
    for split in sorted({item.split for item in manifest.items}):
        items = sorted((i for i in manifest.items if i.split == split), key=lambda i: i.key)
        rng = np.random.default_rng([seed, _stable_hash(split)])
        items = [items[i] for i in rng.permutation(len(items))]
        if limit is not None:
            items = items[:limit]
        per_shard = _samples_per_shard(len(items), samples_per_shard)
        plan[split] = [
            ShardSpec(split, n, items[start : start + per_shard])
            for n, start in enumerate(range(0, len(items), per_shard))
        ]
    return plan


def _plan_digest(plan: dict[str, list[ShardSpec]]) -> str:
    keys = {split: [[i.key for i in spec.items] for spec in specs] for split, specs in plan.items()}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; the plan must not be.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- per video


class StageError(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass
class _Decoded:
    item: VideoItem
    video: Any  # pipeline.video.DecodedVideo
    pose_ref: Any = None  # Ray ObjectRef of the pose actor's result


def _decode(item: VideoItem, ctx: dict[str, Any]) -> Any:
    from .video import DecodeError, decode_video

    try:
        with storage.local_copy(item.source) as path:
            if not os.path.exists(path):
                raise StageError("read", "video file not found")
            if os.path.getsize(path) == 0:
                raise StageError("decode", "empty file (0 bytes)")
            # Pose models see the source-size frames when the stored ones are upscaled.
            keep_native = ctx["pose"] in ("mediapipe", "mmpose")
            return decode_video(path, ctx["frame_stride"], ctx["short_side"], keep_native)
    except StageError:
        raise
    except DecodeError as exc:
        raise StageError("decode", str(exc).splitlines()[0]) from None
    except (OSError, RuntimeError) as exc:
        raise StageError("read", _one_line(exc)) from None


def _finish(decoded: _Decoded, ctx: dict[str, Any]) -> tuple[Sample, dict[str, Any]]:
    """Pose (from the actor or a file), layout conversion, person selection, rasters."""
    import ray

    from .persons import persons_per_frame, select_persons
    from .pose.precomputed import load_precomputed
    from .raster import quantize_raster, render_clip
    from .skeletons import convert_keypoints, get_layout

    item, video = decoded.item, decoded.video
    height, width = video.frames.shape[1:3]
    raster_params: RasterParams = ctx["raster"]
    try:
        if decoded.pose_ref is not None:
            # Estimated on video.pose_frames: mapped to stored-frame pixels.
            keypoints = video.pose_to_stored(ray.get(decoded.pose_ref))
            source_layout, tracked = ctx["pose_layout"], ctx["pose_tracked"]
        else:
            keypoints, source_layout, tracked = load_precomputed(
                item,
                kept_indices=video.frame_indices,
                source_frames=video.source_frames,
                fps=video.fps,
                source_hw=(video.source_height, video.source_width),
                stored_hw=(height, width),
                poses_fps=ctx["poses_fps"],
            )
    except StageError:
        raise
    except Exception as exc:
        raise StageError("pose", _one_line(exc)) from None
    try:
        layout = get_layout(ctx["layout"] or source_layout)
        keypoints = convert_keypoints(keypoints, source_layout, layout.name)
        keypoints = select_persons(
            keypoints, raster_params.max_persons, tracked, raster_params.score_threshold
        )
        raster = render_clip(
            keypoints,
            layout.bones,
            (height // 4, width // 4),
            scale=raster_params.scale,
            sigma=raster_params.sigma,
            paf_width=raster_params.paf_width,
            max_persons=raster_params.max_persons,
            score_threshold=raster_params.score_threshold,
        )
        heatmaps, pafs = quantize_raster(raster, layout.num_joints)
        del raster
    except Exception as exc:
        raise StageError("raster", _one_line(exc)) from None
    with_person = persons_per_frame(keypoints, raster_params.score_threshold) > 0
    person_fraction = float(with_person.mean()) if len(with_person) else 0.0
    meta = {
        "key": item.key,
        "label": item.label,
        "label_name": item.label_name,
        "source": item.source,
        "fps": video.fps,
        "source_frames": video.source_frames,
        "source_height": video.source_height,
        "source_width": video.source_width,
        "height": int(height),
        "width": int(width),
        "layout": layout.name,
        "frame_stride": ctx["frame_stride"],
        "person_order": "track" if tracked else "score",
        "num_persons": int(keypoints.shape[1]),
        "decoder": video.decoder,
        "pose": ctx["pose"],
        **({"extra": item.extra} if item.extra else {}),
    }
    sample = Sample(item.key, video.frames, video.frame_indices, keypoints, heatmaps, pafs, meta)
    row = {
        "key": item.key,
        "label": item.label,
        "label_name": item.label_name,
        "source": item.source,
        "num_frames": int(len(video.frame_indices)),
        "source_frames": int(video.source_frames),
        "fps": float(video.fps),
        "height": int(height),
        "width": int(width),
        "person_fraction": person_fraction,
        "num_persons": int(keypoints.shape[1]),
    }
    return sample, row


def build_shard(
    spec: ShardSpec,
    ctx: dict[str, Any],
    pose_actor: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Build one shard (all three kinds) and its record. Runs as a Ray task.

    Pose estimation for video i runs in the actor while this task decodes video i + 1.
    """
    split_url = storage.join(ctx["out"], spec.split)
    index_rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    stats: Counter[str] = Counter()

    def fail(item: VideoItem, err: StageError) -> None:
        errors.append(
            {"source": item.source, "stage": err.stage, "reason": err.reason, "key": item.key}
        )
        stats[f"error:{err.stage}"] += 1

    def tick() -> None:
        if progress is not None:
            progress.add.remote(1)

    with ShardSetWriter(split_url, spec.number) as writer:
        pending: _Decoded | None = None

        def complete(done: _Decoded) -> None:
            try:
                sample, row = _finish(done, ctx)
                try:
                    row["bytes"] = writer.add(sample)
                except Exception as exc:
                    raise StageError("write", _one_line(exc)) from None
                row["shard"] = spec.number
                index_rows.append(row)
                stats["samples"] += 1
                if row["person_fraction"] == 0.0:
                    stats["no_person"] += 1
            except StageError as err:
                fail(done.item, err)
            tick()

        for item in spec.items:
            try:
                video = _decode(item, ctx)
                current = _Decoded(item, video)
                if pose_actor is not None:
                    current.pose_ref = pose_actor.estimate.remote(video.pose_frames)
            except StageError as err:
                fail(item, err)
                tick()
                current = None
            if pending is not None:
                complete(pending)
            pending = current
        if pending is not None:
            complete(pending)
        writer.commit()
        bytes_by_kind = dict(writer.bytes)

    record = {
        "split": spec.split,
        "shard": spec.number,
        "keys": [row["key"] for row in index_rows],
        "index": index_rows,
        "errors": errors,
        "stats": dict(stats),
        "bytes": bytes_by_kind,
    }
    storage.write_bytes_atomic(_record_url(ctx["out"], spec.split, spec.number), _dumps(record))
    return record


def _record_url(out: str, split: str, number: int) -> str:
    return storage.join(out, BUILD_DIR, split, f"{number:06d}.json")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- driver


def _check_options(options: BuildOptions) -> None:
    from .skeletons import LAYOUT_NAMES

    if options.pose not in POSE_CHOICES:
        raise BuildError(f"--pose must be one of {', '.join(POSE_CHOICES)}")
    if options.pose == "precomputed" and not options.poses:
        raise BuildError("--pose precomputed needs --poses (where the pose files are)")
    if options.layout is not None and options.layout not in LAYOUT_NAMES:
        raise BuildError(f"--layout must be one of {', '.join(LAYOUT_NAMES)}")
    if options.frame_stride < 1:
        raise BuildError("--frame-stride must be >= 1")
    if options.short_side < 16:
        raise BuildError("--short-side must be >= 16")
    if options.samples_per_shard is not None and options.samples_per_shard < 1:
        raise BuildError("--samples-per-shard must be >= 1")
    if options.limit is not None and options.limit < 1:
        raise BuildError("--limit must be >= 1")
    if options.poses_fps not in ("auto", "native"):
        try:
            if float(options.poses_fps) <= 0:
                raise ValueError
        except ValueError:
            raise BuildError("--poses-fps must be auto, native or a positive number") from None
    if not storage.exists(options.videos):
        raise BuildError(f"--videos {options.videos} does not exist")
    if options.annotations and not storage.exists(options.annotations):
        raise BuildError(f"--annotations {options.annotations} does not exist")
    if options.poses and not storage.exists(options.poses):
        raise BuildError(f"--poses {options.poses} does not exist")
    if options.classes and not storage.exists(options.classes):
        raise BuildError(f"--classes {options.classes} does not exist")


def _prepare_output(options: BuildOptions, fingerprint: dict[str, Any]) -> int:
    """Check the output holds nothing or this same build; returns how many shards are done."""
    out = options.out
    options_url = storage.join(out, BUILD_DIR, "options.json")
    entries = [e for e in storage.listdir(out) if not e.startswith(".")]
    is_build = BUILD_DIR in entries or DATASET_JSON in entries
    if entries and not is_build:
        raise BuildError(
            f"--out {out} is not empty and holds no pipeline build; choose an empty folder"
        )
    if is_build and options.overwrite:
        for entry in entries:
            url = storage.join(out, entry)
            storage.remove(url, recursive=True)
        return 0
    if is_build:
        if not storage.exists(options_url):
            raise BuildError(
                f"--out {out} holds a build without {BUILD_DIR}/options.json; use --overwrite"
            )
        previous = json.loads(storage.read_bytes(options_url))
        if previous != fingerprint:
            diff = sorted(
                k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k)
            )
            raise BuildError(
                f"--out {out} holds a different build ({', '.join(diff)} differ); "
                "use --overwrite to replace it or choose another --out"
            )
    return 0


def _done_shards(out: str, split: str) -> set[int]:
    names = storage.listdir(storage.join(out, BUILD_DIR, split))
    done = set()
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext == ".json" and stem.isdigit():
            done.add(int(stem))
    split_url = storage.join(out, split)
    present = set(storage.listdir(split_url))
    # A record without its three tars (deleted by hand) is not done.
    return {n for n in done if all(shard_name(k, n) in present for k in KINDS)}


def _init_ray(options: BuildOptions, logical_cpus: int) -> None:
    import ray

    env = {"env_vars": storage.storage_env()} if storage.storage_env() else None
    if ray.is_initialized():
        return
    common = {"log_to_driver": options.verbose, "runtime_env": env}
    if options.ray_address:
        ray.init(address=options.ray_address, **common)
    else:
        ray.init(
            num_cpus=logical_cpus,
            include_dashboard=False,
            configure_logging=False,
            **common,
        )


def build(options: BuildOptions, show_progress: bool = True) -> BuildSummary:
    """Build (or resume) a dataset; returns counts for the summary."""
    started = time.monotonic()
    _check_options(options)
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
        raise BuildError(
            "no usable videos: every annotation row was filtered, missing or malformed"
        )

    pose_layout, pose_tracked = _pose_source_info(options, manifest)
    layout = options.layout or pose_layout
    from .skeletons import can_convert

    if not can_convert(pose_layout, layout):
        raise BuildError(f"cannot convert {pose_layout} keypoints to --layout {layout}")

    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    fingerprint = options.fingerprint() | {
        "classes": manifest.classes,
        # The plan itself (which key goes to which shard), as a digest: resuming with another
        # plan would mix two datasets.
        "plan_sha256": _plan_digest(plan),
        "format_version": 1,
    }
    _prepare_output(options, fingerprint)
    storage.makedirs(options.out)
    storage.write_bytes_atomic(
        storage.join(options.out, BUILD_DIR, "options.json"), _dumps(fingerprint)
    )

    summary = BuildSummary(
        out=options.out,
        listed=manifest.listed,
        filtered=manifest.filtered,
        missing=manifest.missing,
        unlisted=manifest.unlisted,
    )
    todo: list[ShardSpec] = []
    for split, specs in plan.items():
        remove_temporaries(storage.join(options.out, split))
        done = _done_shards(options.out, split)
        summary.shards += len(specs)
        summary.shards_resumed += sum(1 for s in specs if s.number in done)
        todo += [s for s in specs if s.number not in done]
    summary.videos = sum(len(s.items) for specs in plan.values() for s in specs)

    ctx = {
        "out": options.out,
        "frame_stride": options.frame_stride,
        "short_side": options.short_side,
        "poses_fps": options.poses_fps,
        "layout": layout,
        "pose": options.pose,
        "pose_layout": pose_layout,
        "pose_tracked": pose_tracked,
        "raster": RasterParams(),
    }
    if todo:
        _run(options, todo, ctx, summary, show_progress)

    _finalize(options, manifest, plan, layout, pose_tracked, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _pose_source_info(options: BuildOptions, manifest: Manifest) -> tuple[str, bool]:
    if options.pose == "precomputed":
        if manifest.pose_layout is None:
            from .pose.precomputed import guess_layout

            return guess_layout(options.poses), manifest.person_order == "track"
        return manifest.pose_layout, manifest.person_order == "track"
    # Model backends give COCO-17; mediapipe tracks persons through a video.
    return "coco17", options.pose == "mediapipe"


def shard_task_options(options: BuildOptions) -> dict[str, Any]:
    """Ray options of the per-shard task: one CPU and never a GPU (decode, raster, write)."""
    return {"num_cpus": 1, "num_gpus": 0, "max_calls": options.max_calls}


def pose_actor_options(name: str) -> dict[str, Any]:
    """Ray options of a pose actor of backend ``name``: :func:`pipeline.pose.resources`."""
    from .pose import resources

    return resources(name)


def _run(
    options: BuildOptions,
    todo: list[ShardSpec],
    ctx: dict[str, Any],
    summary: BuildSummary,
    show_progress: bool,
) -> None:
    import ray

    workers = options.num_workers or os.cpu_count() or 1
    uses_actor = options.pose in ("mediapipe", "mmpose")
    # A local Ray gets exactly the CPUs the workers ask for, so --num-workers bounds the work
    # done at once; shard tasks wait on pose actors much of the time, so both get room.
    _init_ray(options, logical_cpus=workers * (2 if uses_actor else 1))

    actors: list[Any] = []
    if uses_actor:
        from .pose import make_pose_actor_class

        actor_cls = make_pose_actor_class(**pose_actor_options(options.pose))
        actors = [actor_cls.remote(options.pose, options.pose_options) for _ in range(workers)]
    progress = _progress_actor()
    task = ray.remote(**shard_task_options(options))(build_shard)

    refs = {}
    queue = list(todo)
    videos_total = sum(len(s.items) for s in todo)

    def submit() -> None:
        spec = queue.pop(0)
        actor = actors[spec.number % len(actors)] if actors else None
        refs[task.remote(spec, ctx, actor, progress)] = spec

    # At most `workers` shard tasks in flight, on a cluster too (where Ray would run any
    # queued extra at once on a free CPU).
    for _ in range(min(len(queue), workers)):
        submit()
    bar = _progress_bar(videos_total, show_progress)
    seen = 0
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            count = ray.get(progress.count.remote())
            bar.update(count - seen)
            seen = count
            for ref in ready:
                spec = refs.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    # A shard task that died (e.g. out of memory) is retried on the next run;
                    # the others go on.
                    bar.write(f"shard {spec.split}/{spec.number:06d} failed: {_one_line(exc)}")
                if queue:
                    submit()
    finally:
        bar.close()
        if not options.ray_address:
            ray.shutdown()


def _progress_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self) -> None:
            self.n = 0

        def add(self, n: int) -> None:
            self.n += n

        def count(self) -> int:
            return self.n

    return Progress.remote()


def _progress_bar(total: int, enabled: bool) -> Any:
    from .report import progress_bar

    return progress_bar(total=total, unit="video", desc="build", enabled=enabled)


def _finalize(
    options: BuildOptions,
    manifest: Manifest,
    plan: dict[str, list[ShardSpec]],
    layout: str,
    tracked: bool,
    summary: BuildSummary,
) -> None:
    split_info: dict[str, dict[str, Any]] = {}
    incomplete = []
    # Every manifest error names its split; one that cannot (none so far) goes to the first.
    first = min(plan)
    manifest_errors = {
        split: [e for e in manifest.errors if e.split == split or (not e.split and split == first)]
        for split in plan
    }
    for split, specs in plan.items():
        index_rows: list[dict[str, Any]] = []
        error_rows: list[dict[str, Any]] = [asdict(e) for e in manifest_errors[split]]
        for e in manifest_errors[split]:
            summary.errors_by_stage[e.stage] = summary.errors_by_stage.get(e.stage, 0) + 1
        for spec in specs:
            url = _record_url(options.out, split, spec.number)
            if not storage.exists(url):
                incomplete.append(f"{split}/{spec.number:06d}")
                continue
            record = json.loads(storage.read_bytes(url))
            index_rows += record["index"]
            error_rows += [e | {"split": split} for e in record["errors"]]
            for key, value in record["stats"].items():
                if key.startswith("error:"):
                    stage = key.split(":", 1)[1]
                    summary.errors_by_stage[stage] = summary.errors_by_stage.get(stage, 0) + value
            summary.samples += record["stats"].get("samples", 0)
            summary.no_person += record["stats"].get("no_person", 0)
            for kind, n in record["bytes"].items():
                summary.bytes_by_kind[kind] = summary.bytes_by_kind.get(kind, 0) + n
        write_parquet(storage.join(options.out, split, INDEX_PARQUET), index_rows, INDEX_FIELDS)
        write_parquet(
            storage.join(options.out, split, ERRORS_PARQUET),
            [
                {k: e.get(k, "") for k in ("source", "stage", "reason", "key", "split")}
                for e in error_rows
            ],
            ERRORS_FIELDS,
        )
        split_info[split] = {
            "samples": len(index_rows),
            "shards": len(specs),
            "errors": len(error_rows),
            "frames": int(sum(r["num_frames"] for r in index_rows)),
        }
        summary.splits[split] = {"samples": len(index_rows), "errors": len(error_rows)}
    if incomplete:
        raise RuntimeError(
            f"{len(incomplete)} shard(s) did not finish ({', '.join(incomplete[:5])}); "
            "run the same command again to resume"
        )
    info = DatasetInfo(
        dataset=manifest.dataset,
        classes=manifest.classes,
        layout=layout,
        person_order="track" if tracked else "score",
        frame_stride=options.frame_stride,
        short_side=options.short_side,
        splits=split_info,
        seed=options.seed,
        build={
            "pose": options.pose,
            "poses_fps": options.poses_fps,
            "protocol": options.protocol,
            "samples_per_shard": max((len(s.items) for v in plan.values() for s in v), default=0),
            "limit": options.limit,
            "videos": options.videos,
            "annotations": options.annotations,
            "pipeline_version": __version__,
            "person_rules": options.person_rules(),
            "stored_size_example": list(stored_size(1080, 1920, options.short_side)),
        },
    )
    info.save(options.out)
