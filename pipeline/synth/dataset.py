"""Plan and write a synthetic dataset in the native layout of Kinetics, Mimetics or NTU RGB+D.

Layout written under ``out_dir``:

- kinetics / mimetics::

    videos/<youtube_id>_<start:06d>_<end:06d>.mp4
    skeletons/<video stem>.json     ST-GCN kinetics-skeleton (OpenPose-18, 0..1 coordinates)
    annotations.csv                 label,youtube_id,time_start,time_end,split
    classes.txt                     one class name per line, index order

  Splits are train/val for kinetics and test for mimetics. Ids are 11 characters from
  ``[A-Za-z0-9_-]`` like YouTube's; some begin with ``-`` and some hold ``_``. As in Kinetics,
  the CSV times (a 10 s window) only name the file: the clip itself is ``frames / fps`` long.

- ntu::

    videos/SsssCcccPpppRrrrAaaa_rgb.avi
    skeletons/SsssCcccPpppRrrrAaaa.skeleton    NTU RGB+D text format, 25 Kinect joints
    classes.txt                                NTU action names of A001..A<num_classes>

  Real NTU videos are 1920x1080 and their colorX/colorY are pixels of that frame. Ours are small
  (320x180 by default), and colorX/colorY are still written in the 1920x1080 colour frame's pixels
  (x_color = (x + 0.5) * 1920 / width - 0.5, pixel centres at integers), as in the real data.
  x, y, z are camera-space metres of the rendered 3D figure and depthX/depthY its projection by a
  Kinect-like 512x424 depth camera, so that they are plausible (they are not used by the
  pipeline). Performers, cameras and setups are spread so that NTU-60 xsub/xview and NTU-120
  xsub/xset all have train and val samples.

- all: ``synth.json`` (options, class table, contexts and per-video ground truth: motion,
  context drawn, hidden or not, persons, seed, and ``decided_by``: whether the pose or the scene
  alone could tell the video's class, see :func:`decided_by`).

Class table. Class k performs motion k of :data:`pipeline.synth.motions.MOTION_NAMES` in the
scene ("context") k. ``context_pairs`` N makes classes 2i and 2i+1 (i < N) share a motion, so
only their scene tells them apart; ``shared_context`` M makes the last M classes share one scene,
so only their motion tells them apart. The table depends on these options only, never on the
seed, so a kinetics and a mimetics dataset made with the same class options agree. With
``context="in"`` a video shows its class's scene; with ``"out"`` (Mimetics' analogue) a scene
drawn at random from all the table's scenes.

Hidden videos (``hidden_fraction``): the one person is behind an opaque panel ("occluded") or
mostly outside the frame ("cutoff"); the pose files then mark what cannot be seen as absent.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput
from pipeline.formats.kinetics_skeleton import write_kinetics_skeleton
from pipeline.formats.ntu_skeleton import NtuName, write_ntu_skeleton
from pipeline.synth.motions import MOTION_NAMES
from pipeline.synth.render import VideoSpec, render_video
from pipeline.synth.scene import make_context
from pipeline.synth.video import write_video

__all__ = [
    "DATASETS",
    "FRAME_SIDE_RANGE",
    "ClassSpec",
    "PlannedVideo",
    "SynthError",
    "class_table",
    "decided_by",
    "format_summary",
    "make_dataset",
    "plan_dataset",
]

DATASETS = ("kinetics", "mimetics", "ntu")
DEFAULT_SIZE = {"kinetics": (160, 120), "mimetics": (160, 120), "ntu": (320, 180)}
DEFAULT_CONTEXT = {"kinetics": "in", "mimetics": "out", "ntu": "in"}
# What make_dataset writes (and, with overwrite, removes first); nothing else is touched.
OUTPUTS = ("videos", "skeletons", "annotations.csv", "classes.txt", "synth.json")
_DATASET_CODE = {"kinetics": 1, "mimetics": 2, "ntu": 3}
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
# Alternating NTU-60/120 cross-subject train (1, 2, 4) and val (3, 6) performers.
_NTU_PERFORMERS = (1, 3, 2, 6, 4)
# Rough horizontal angle of NTU's three cameras (0 = facing the person).
_NTU_CAMERA_YAW = {1: 0.0, 2: 45.0, 3: -45.0}
_MULTI_PERSON_FRACTION = 0.25


FRAME_SIDE_RANGE = (32, 4096)  # smallest and largest frame side, pixels


class SynthError(InvalidInput):
    """A bad option or output directory; the message is one line for the user."""


@dataclass(frozen=True)
class ClassSpec:
    index: int
    name: str
    motion: str
    context: int


@dataclass(frozen=True)
class PlannedVideo:
    """One video of the plan: its render spec and where and how it is listed."""

    index: int
    label: int
    spec: VideoSpec
    stem: str
    video: str  # path relative to the dataset root
    skeleton: str
    split: str | None = None  # kinetics/mimetics
    youtube_id: str | None = None
    time_start: int | None = None
    time_end: int | None = None
    ntu: NtuName | None = None


def _ntu_names(count: int) -> list[str]:
    name = "ntu60.txt" if count <= 60 else "ntu120.txt"
    text = resources.files("pipeline").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_table(
    num_classes: int, context_pairs: int = 0, shared_context: int = 0, dataset: str = "kinetics"
) -> tuple[list[ClassSpec], int]:
    """The classes (motion and context of each) and the number of distinct contexts."""
    _check_classes(num_classes, context_pairs, shared_context, dataset)
    first_shared = num_classes - shared_context
    num_contexts = first_shared + (1 if shared_context else 0)
    specs = []
    for k in range(num_classes):
        motion = MOTION_NAMES[k // 2 if k < 2 * context_pairs else k - context_pairs]
        context = min(k, first_shared)
        specs.append((k, motion, context))
    if dataset == "ntu":
        names = _ntu_names(num_classes)[:num_classes]
    else:
        names = []
        for k, motion, context in specs:
            name = motion
            if k < 2 * context_pairs:
                name = f"{motion} with {make_context(context).name}"
            while name in names:  # two contexts may share a colour name
                name += f" {context}"
            names.append(name)
    classes = [ClassSpec(k, names[k], motion, ctx) for k, motion, ctx in specs]
    return classes, num_contexts


def _check_classes(num_classes: int, pairs: int, shared: int, dataset: str) -> None:
    if dataset not in DATASETS:
        raise SynthError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if num_classes < 2:
        raise SynthError(f"--num-classes must be at least 2, got {num_classes}")
    if pairs < 0 or shared < 0:
        raise SynthError("--context-pairs and --shared-context must not be negative")
    if shared == 1:
        raise SynthError("--shared-context must be 0 or at least 2 (classes sharing one scene)")
    if 2 * pairs + shared > num_classes:
        raise SynthError(
            f"--context-pairs {pairs} (2 classes each) and --shared-context {shared} need "
            f"{2 * pairs + shared} classes, but --num-classes is {num_classes}"
        )
    if num_classes - pairs > len(MOTION_NAMES):
        raise SynthError(
            f"{num_classes} classes with {pairs} context pairs need {num_classes - pairs} "
            f"distinct motions; there are {len(MOTION_NAMES)}"
        )
    if dataset == "ntu" and num_classes > 120:
        raise SynthError("NTU RGB+D has 120 actions; --num-classes must be at most 120")


def _check_options(
    dataset: str,
    videos_per_class: int,
    frames: int,
    width: int,
    height: int,
    persons: int,
    context: str,
    hidden_fraction: float,
    val_fraction: float,
    fps: float,
    seed: int,
) -> None:
    if videos_per_class < 1:
        raise SynthError(f"--videos-per-class must be at least 1, got {videos_per_class}")
    if dataset == "ntu" and videos_per_class > 2970:
        raise SynthError("--videos-per-class must be at most 2970 for NTU sample names")
    if frames < 2:
        raise SynthError(f"--frames must be at least 2, got {frames}")
    lo, hi = FRAME_SIDE_RANGE
    if not (lo <= width <= hi and lo <= height <= hi):
        raise SynthError(f"frame size must be between {lo} and {hi} pixels, got {width}x{height}")
    if width % 2 or height % 2:
        raise SynthError(f"width and height must be even (4:2:0 video), got {width}x{height}")
    if not 1 <= persons <= 5:
        raise SynthError(f"--persons must be between 1 and 5, got {persons}")
    if context not in ("in", "out"):
        raise SynthError(f"--context must be 'in' or 'out', got {context!r}")
    if not 0.0 <= hidden_fraction <= 1.0:
        raise SynthError(f"--hidden-fraction must be between 0 and 1, got {hidden_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise SynthError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not 1.0 <= fps <= 240.0:
        raise SynthError(f"--fps must be between 1 and 240, got {fps}")
    if seed < 0:
        raise SynthError(f"--seed must not be negative, got {seed}")


def _video_seed(seed: int, dataset: str, index: int) -> int:
    # Each video's randomness depends on (seed, dataset, index) only, not on the other videos.
    state = np.random.SeedSequence([seed, _DATASET_CODE[dataset], index]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def _youtube_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    used = set()
    while len(ids) < count:
        chars = rng.choice(_ID_CHARS, 11)
        # Real Kinetics ids begin with '-' and hold '_' now and then; make sure both occur.
        if len(ids) == 0:
            chars[0] = "-"
        elif len(ids) == 1:
            chars[5] = "_"
        elif len(ids) == 2:
            chars[0], chars[3] = "-", "_"
        youtube_id = "".join(chars)
        if youtube_id not in used:
            used.add(youtube_id)
            ids.append(youtube_id)
    return ids


def plan_dataset(
    dataset: str,
    *,
    num_classes: int = 6,
    videos_per_class: int = 4,
    frames: int = 48,
    width: int | None = None,
    height: int | None = None,
    persons: int = 2,
    context: str | None = None,
    context_pairs: int = 0,
    shared_context: int = 0,
    hidden_fraction: float = 0.0,
    val_fraction: float = 0.25,
    fps: float = 30.0,
    seed: int = 0,
) -> tuple[list[ClassSpec], int, list[PlannedVideo]]:
    """The class table, the number of contexts and every video of a dataset, without rendering.

    Deterministic: the same arguments give the same plan. See :func:`make_dataset`.
    """
    classes, num_contexts = class_table(num_classes, context_pairs, shared_context, dataset)
    width = DEFAULT_SIZE[dataset][0] if width is None else int(width)
    height = DEFAULT_SIZE[dataset][1] if height is None else int(height)
    context = DEFAULT_CONTEXT[dataset] if context is None else context
    _check_options(
        dataset, videos_per_class, frames, width, height, persons, context,
        hidden_fraction, val_fraction, fps, seed,
    )  # fmt: skip
    rng = np.random.default_rng([seed, _DATASET_CODE[dataset]])
    total = num_classes * videos_per_class
    labels = np.repeat(np.arange(num_classes), videos_per_class)
    within = np.tile(np.arange(videos_per_class), num_classes)

    # Hidden videos are spread over the classes (round robin), so pose failure says nothing
    # about the class.
    per_class = [rng.permutation(videos_per_class) for _ in range(num_classes)]
    round_robin = [c * videos_per_class + int(per_class[c][r])
                   for r in range(videos_per_class) for c in rng.permutation(num_classes)]  # fmt: skip
    hidden: dict[int, str] = {}
    for i in round_robin[: int(round(hidden_fraction * total))]:
        hidden[i] = "occluded" if rng.random() < 0.5 else "cutoff"

    people = np.ones(total, dtype=np.int64)
    if persons >= 2:
        candidates = [i for i in range(total) if i not in hidden]
        count = min(len(candidates), max(2, int(round(_MULTI_PERSON_FRACTION * total))))
        for i in rng.choice(candidates, size=count, replace=False) if count else []:
            people[i] = rng.integers(2, persons + 1)

    contexts = [
        classes[int(labels[i])].context if context == "in" else int(rng.integers(num_contexts))
        for i in range(total)
    ]

    splits: list[str | None] = [None] * total
    if dataset == "mimetics":
        splits = ["test"] * total
    elif dataset == "kinetics":
        n_val = int(round(videos_per_class * val_fraction))
        if val_fraction > 0 and videos_per_class >= 2:
            n_val = min(max(n_val, 1), videos_per_class - 1)
        for c in range(num_classes):
            val = set(rng.choice(videos_per_class, size=n_val, replace=False).tolist())
            for k in range(videos_per_class):
                splits[c * videos_per_class + k] = "val" if k in val else "train"

    ids = _youtube_ids(rng, total) if dataset != "ntu" else []
    planned = []
    for i in range(total):
        label, k = int(labels[i]), int(within[i])
        fields: dict[str, Any] = {}
        if dataset == "ntu":
            name = NtuName(
                setup=1 + (k // 3 + label) % 2,
                camera=1 + k % 3,
                performer=_NTU_PERFORMERS[(k + label) % len(_NTU_PERFORMERS)],
                replication=1 + k // 30,
                action=label + 1,
            )
            stem = name.name
            video, skeleton = f"videos/{stem}_rgb.avi", f"skeletons/{stem}.skeleton"
            camera, yaw = "ntu", _NTU_CAMERA_YAW[name.camera]
            fields["ntu"] = name
        else:
            start = int(rng.integers(0, 290))
            stem = f"{ids[i]}_{start:06d}_{start + 10:06d}"
            video, skeleton = f"videos/{stem}.mp4", f"skeletons/{stem}.json"
            camera, yaw = "kinetics", 0.0
            fields.update(youtube_id=ids[i], time_start=start, time_end=start + 10)
        spec = VideoSpec(
            motion=classes[label].motion,
            context=contexts[i],
            frames=frames,
            width=width,
            height=height,
            fps=float(fps),
            seed=_video_seed(seed, dataset, i),
            persons=int(people[i]),
            hidden=hidden.get(i),
            camera=camera,
            camera_yaw=yaw,
        )
        planned.append(
            PlannedVideo(i, label, spec, stem, video, skeleton, split=splits[i], **fields)
        )
    return classes, num_contexts, planned


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"output directory {out} is not empty; pass --overwrite to replace it")
        for name in OUTPUTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "skeletons").mkdir(exist_ok=True)


def make_dataset(
    out_dir: str | Path,
    dataset: str,
    *,
    overwrite: bool = False,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Write a synthetic ``dataset`` ("kinetics", "mimetics" or "ntu") under ``out_dir``.

    Sizes default to 160x120 (kinetics, mimetics) and 320x180 (ntu); ``context`` to "in" for
    kinetics and ntu and "out" for mimetics. ``persons`` is the most persons in a video (a
    quarter of the videos, at least two, show more than one). ``hidden_fraction`` of the videos
    hide their person; ``val_fraction`` of each kinetics class goes to val. Raises
    :class:`SynthError` on bad options or a non-empty ``out_dir`` without ``overwrite``.
    ``options`` are the keyword arguments of :func:`plan_dataset` (one signature for both).
    Returns a summary dict (see :func:`format_summary`).
    """
    started = time.perf_counter()
    try:
        bound = inspect.signature(plan_dataset).bind(dataset, **options)
    except TypeError as exc:
        raise SynthError(f"make_dataset: {exc}") from None
    bound.apply_defaults()
    opts = {k: v for k, v in bound.arguments.items() if k != "dataset"}
    classes, num_contexts, planned = plan_dataset(dataset, **opts)
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    spec0 = planned[0].spec

    iterator: Any = planned
    if progress:
        from pipeline.progress import progress_bar

        iterator = progress_bar(len(planned), f"synth {dataset}", "video", iterable=planned)
    decides = decided_by(classes, planned)
    records = []
    codec = ""
    for item in iterator:
        rendered = render_video(item.spec)
        codec = write_video(out / item.video, rendered.frames, item.spec.fps)
        name = classes[item.label].name
        if dataset == "ntu":
            write_ntu_skeleton(out / item.skeleton, rendered.ntu_bodies())
        else:
            write_kinetics_skeleton(
                out / item.skeleton,
                rendered.openpose18(),
                item.spec.width,
                item.spec.height,
                label=name,
                label_index=item.label,
            )
        records.append(_record(item, name, rendered.visible, decides[item.index]))

    (out / "classes.txt").write_text("".join(c.name + "\n" for c in classes), encoding="utf-8")
    if dataset != "ntu":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for item in planned:
            writer.writerow(
                [classes[item.label].name, item.youtube_id, item.time_start, item.time_end,
                 item.split]
            )  # fmt: skip
        (out / "annotations.csv").write_bytes(buf.getvalue().encode("utf-8"))

    summary_options = {
        "dataset": dataset,
        **opts,
        "width": spec0.width,
        "height": spec0.height,
        "context": opts["context"] or DEFAULT_CONTEXT[dataset],
        "val_fraction": opts["val_fraction"] if dataset == "kinetics" else None,
        "fps": float(opts["fps"]),
    }
    meta = {
        "generator": "pipeline synth",
        "format": 1,
        "options": summary_options,
        "codec": codec,
        "coordinates": (
            "pixel centres at integers; kinetics-skeleton x = x_px / width, y = y_px / height; "
            "NTU colorX/colorY are pixels of the 1920x1080 colour frame; joints drawn at 1/16 pixel "
            "precision"
        ),
        "classes": [asdict(c) for c in classes],
        "contexts": [make_context(k).to_json() for k in range(num_contexts)],
        "videos": records,
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    splits: dict[str, int] = {}
    for item in planned:
        if item.split:
            splits[item.split] = splits.get(item.split, 0) + 1
    return {
        "dataset": dataset,
        "out": str(out),
        "num_videos": len(planned),
        "num_classes": len(classes),
        "classes": [c.name for c in classes],
        "splits": splits,
        "frames": spec0.frames,
        "width": spec0.width,
        "height": spec0.height,
        "fps": spec0.fps,
        "context": summary_options["context"],
        "hidden": sum(1 for item in planned if item.spec.hidden),
        "multi_person": sum(1 for item in planned if item.spec.persons > 1),
        "codec": codec,
        "seconds": time.perf_counter() - started,
    }


def decided_by(classes: list[ClassSpec], planned: list[PlannedVideo]) -> list[dict[str, bool]]:
    """Which stream could tell each video's class from the others, from the class table alone.

    ``pose``: the person is visible (not hidden) and no other class performs the same motion.
    ``scene``: the video shows its class's own scene and no other class has that scene (out of
    context, only when the scene drawn happens to be the class's). A video neither decides can
    be told at best among the classes it is ambiguous with.
    """
    motions: dict[str, int] = {}
    contexts: dict[int, int] = {}
    for c in classes:
        motions[c.motion] = motions.get(c.motion, 0) + 1
        contexts[c.context] = contexts.get(c.context, 0) + 1
    out = []
    for item in planned:
        own = classes[item.label]
        out.append(
            {
                "pose": item.spec.hidden is None and motions[own.motion] == 1,
                "scene": item.spec.context == own.context and contexts[own.context] == 1,
            }
        )
    return out


def _record(
    item: PlannedVideo, name: str, visible: np.ndarray, decides: dict[str, bool]
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": item.stem,
        "video": item.video,
        "skeleton": item.skeleton,
        "label": name,
        "label_index": item.label,
        "motion": item.spec.motion,
        "context": item.spec.context,
        "hidden": item.spec.hidden,
        "persons": item.spec.persons,
        "visible_fraction": round(float(visible.mean()), 4) if visible.size else 0.0,
        "seed": item.spec.seed,
        # Which stream alone could tell the class (decided_by): the ceiling of each stream.
        "decided_by": decides,
    }
    if item.split is not None:
        record["split"] = item.split
    if item.ntu is not None:
        record.update(asdict(item.ntu))
    return record


def format_summary(summary: dict[str, Any]) -> str:
    """One line for the end of ``pipeline synth``."""
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    return (
        f"synth: wrote {summary['num_videos']} {summary['dataset']} videos "
        f"({summary['num_classes']} classes{'; ' + splits if splits else ''}; "
        f"{summary['width']}x{summary['height']}, {summary['frames']} frames at "
        f"{summary['fps']:g} fps; context {summary['context']}; {summary['hidden']} hidden, "
        f"{summary['multi_person']} multi-person) to {summary['out']} "
        f"in {summary['seconds']:.1f} s"
    )
