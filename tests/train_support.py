"""The trainer's tests' support: small shard-format-v1 datasets written with the real shard
writer, the trainer's CLI run in-process, and runs shared between test files.

Each video shows one stick figure (coco17) walking across a noisy background. Its class is
visible in both streams: the arms' pose (up / out to the side / down) for the pose stream, the
figure's colour and the scene's tint for the appearance stream, so a tiny model learns it in a
few steps.

Until `pipeline synth` + `pipeline build` are used end to end (tests/test_train_e2e.py), this is
how the trainer's tests get shards: ``ShardSetWriter`` + ``DatasetInfo.save`` + index.parquet.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner, Result

from pipeline.raster import quantize_raster, render_clip
from pipeline.shards import DatasetInfo, RasterParams, Sample, ShardSetWriter
from pipeline.skeletons import convert_keypoints, get_layout
from train.cli import main

CLASSES = ("arms up", "arms out", "arms down")
COLOURS = np.array([[230, 40, 40], [40, 230, 40], [60, 60, 240]], dtype=np.float32)

# coco17 joint offsets from the hip centre, in figure units (y down); arms set per class.
_BODY = {
    0: (0, -10),  # nose
    1: (-1, -11),
    2: (1, -11),
    3: (-2, -10),
    4: (2, -10),
    5: (-3, -7),  # left shoulder (image left)
    6: (3, -7),
    11: (-2, 0),  # hips
    12: (2, 0),
    13: (-2, 5),  # knees
    14: (2, 5),
    15: (-2, 10),  # ankles
    16: (2, 10),
}
_ARMS = {
    "arms up": {7: (-4, -11), 8: (4, -11), 9: (-4, -15), 10: (4, -15)},
    "arms out": {7: (-7, -7), 8: (7, -7), 9: (-11, -7), 10: (11, -7)},
    "arms down": {7: (-4, -3), 8: (4, -3), 9: (-4, 1), 10: (4, 1)},
}


def figure_keypoints(class_name: str, cx: float, cy: float, scale: float) -> np.ndarray:
    kp = np.zeros((17, 3), dtype=np.float32)
    for j, (dx, dy) in {**_BODY, **_ARMS[class_name]}.items():
        kp[j] = (cx + dx * scale, cy + dy * scale, 1.0)
    return kp


def draw_frame(
    rng: np.random.Generator, kp: np.ndarray, colour: np.ndarray, hw: tuple[int, int]
) -> np.ndarray:
    h, w = hw
    # The scene is tinted with the class colour too: context, as in in-context action videos.
    frame = rng.integers(0, 60, size=(h, w, 3)).astype(np.float32) + 0.4 * colour
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y, s in kp:
        if s > 0:
            frame[(xx - x) ** 2 + (yy - y) ** 2 <= 2.5**2] = colour
    return frame.clip(0, 255).astype(np.uint8)


def make_video(
    rng: np.random.Generator,
    label: int,
    num_frames: int,
    frame_stride: int,
    hw: tuple[int, int],
    classes: tuple[str, ...] = CLASSES,
    with_person: bool = True,
    layout: str = "coco17",
) -> dict:
    """Frames, frame indices and keypoints [F, P, 17, 3] of one synthetic video."""
    h, w = hw
    # A class named like one of CLASSES (any case, "_" for " ") looks like it; others cycle.
    name = classes[label].replace("_", " ").lower()
    if name not in _ARMS:
        name = CLASSES[label % len(CLASSES)]
    colour = COLOURS[CLASSES.index(name)]
    scale = h / 32.0
    x0, vx = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(-0.3, 0.3) * frame_stride
    cy = h * 0.55
    frames, kps = [], []
    for i in range(num_frames):
        kp = figure_keypoints(name, x0 + vx * i, cy + rng.normal(0, 0.3), scale)
        kps.append(kp)
        frames.append(draw_frame(rng, kp if with_person else kp * 0, colour, hw))
    keypoints = np.stack(kps)[:, None] if with_person else np.zeros((num_frames, 0, 17, 3))
    keypoints = convert_keypoints(keypoints, "coco17", layout)
    return {
        "frames": np.stack(frames),
        "frame_indices": np.arange(num_frames, dtype=np.int64) * frame_stride,
        "keypoints": keypoints.astype(np.float32),
    }


def make_dataset(
    root: str | os.PathLike,
    splits: dict[str, int] | None = None,
    *,
    classes: tuple[str, ...] = CLASSES,
    layout: str = "coco17",
    frame_stride: int = 2,
    hw: tuple[int, int] = (32, 40),
    frames: tuple[int, int] = (20, 40),
    samples_per_shard: int = 4,
    short: int = 1,
    no_person: int = 1,
    seed: int = 0,
) -> DatasetInfo:
    """Write a dataset: ``splits`` maps split name -> videos; classes cycle over the videos.

    In each split the first ``short`` videos have 2 kept frames (shorter than any test clip)
    and the next ``no_person`` videos have no person at all.
    """
    splits = splits or {"train": 12, "val": 6}
    root = str(root)
    lay = get_layout(layout)
    params = RasterParams()
    rng = np.random.default_rng(seed)
    info = DatasetInfo(
        dataset="synth-train",
        classes=list(classes),
        layout=layout,
        person_order="track",
        frame_stride=frame_stride,
        short_side=min(hw),
        raster=params,
        splits={name: {"samples": n} for name, n in splits.items()},
    )
    for split, count in splits.items():
        rows = []
        writer = None
        for i in range(count):
            shard = i // samples_per_shard
            if i % samples_per_shard == 0:
                if writer is not None:
                    writer.commit()
                writer = ShardSetWriter(os.path.join(root, split), shard)
            label = i % len(classes)
            n = 2 if i < short else int(rng.integers(frames[0], frames[1] + 1))
            with_person = not (short <= i < short + no_person)
            video = make_video(rng, label, n, frame_stride, hw, classes, with_person, layout)
            raster = render_clip(
                video["keypoints"],
                lay.bones,
                (hw[0] // 4, hw[1] // 4),
                scale=params.scale,
                sigma=params.sigma,
                paf_width=params.paf_width,
            )
            heat, paf = quantize_raster(raster, lay.num_joints)
            key = f"{split}_{i:04d}"
            meta = {
                "key": key,
                "label": label,
                "label_name": classes[label],
                "height": hw[0],
                "width": hw[1],
                "layout": layout,
                "frame_stride": frame_stride,
            }
            writer.add(
                Sample(
                    key,
                    video["frames"],
                    video["frame_indices"],
                    video["keypoints"],
                    heat,
                    paf,
                    meta,
                )
            )
            rows.append(
                {
                    "key": key,
                    "shard": shard,
                    "label": label,
                    "label_name": classes[label],
                    "source": f"{key}.mp4",
                    "num_frames": n,
                    "source_frames": n * frame_stride,
                    "fps": 30.0,
                    "height": hw[0],
                    "width": hw[1],
                    "person_fraction": 1.0 if with_person else 0.0,
                    "bytes": 0,
                }
            )
        if writer is not None:
            writer.commit()
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, split, "index.parquet"))
    info.save(root)
    return info


def truncate(path: str | os.PathLike, fraction: float = 0.5) -> None:
    """Cut a file to ``fraction`` of its size (a shard damaged mid-stream)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ----------------------------------------------------------------------------------------------
# Running the trainer in tests

# Tiny models and clips: a CPU step takes a fraction of a second.
TINY = (
    "--batch-size", "4", "--input-size", "32", "--clip-len", "2", "--stride", "4",
    "--pose-clip-len", "4", "--pose-stride", "2", "--appearance-depth", "18",
    "--pose-depth", "18", "--workers", "0", "--no-progress",
)  # fmt: skip
# Subprocesses: one intra-op thread (the machine's cores are shared; more threads only fight).
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Train in one thread, as the subprocesses do (ENV), so results compare exactly."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def train_cli(*args: str, ok: bool = True) -> Result:
    """Run ``train ...`` in this process (click's runner); raise with the output on failure."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok and result.exit_code != 0:
        detail = "".join(traceback.format_exception(result.exception)) if result.exception else ""
        raise AssertionError(
            f"train {' '.join(map(str, args))} -> {result.exit_code}\n"
            f"{result.output[-3000:]}\n{detail}"
        )
    return result


_SHARED: dict[str, Path] = {}


def shared_runs(tmp_path_factory) -> dict[str, Path]:
    """One dataset and one run of each stage, made once per test session and shared by the
    fit and eval tests: appearance (6 epochs, enough to learn the visible class), pose and
    integral (from the two stage-1 checkpoints), 1 epoch each."""
    if _SHARED:
        return _SHARED
    base = tmp_path_factory.mktemp("shared-runs")
    data = base / "ds"
    make_dataset(data, {"train": 24, "val": 12}, short=1, no_person=1, seed=3)
    runs = {"data": data}
    for stage, extra in (
        # Precise BN: 36 steps leave the running averages far from the real statistics.
        ("appearance", ("--epochs", "6", "--lr", "0.003", "--precise-bn", "4")),
        ("pose", ("--epochs", "1")),
    ):
        runs[stage] = base / stage
        train_cli("fit", "--stage", stage, "--data", data, "--out", runs[stage], *TINY, *extra)
    runs["integral"] = base / "integral"
    train_cli(
        "fit", "--stage", "integral", "--data", data, "--out", runs["integral"],
        "--init-appearance", runs["appearance"] / "last.pt",
        "--init-pose", runs["pose"] / "last.pt",
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress",
    )  # fmt: skip
    _SHARED.update(runs)
    return _SHARED
