"""Training-clip loading speed per CPU core: our shard loader vs mmaction2's video pipelines.

    python benchmarks/loader.py [--shards DIR] [--clips N] [--skip-peer] [--write docs/benchmarks.md]

Both sides make training clips of the paper's shape from the same real videos
(tests/data/real), on one core (one thread everywhere), and are timed in CPU seconds of
their process (robust on a shared machine) as well as wall time:

- ours (``train.data.ClipDataset``, the trainer's loader, in-process, no DataLoader workers):
  read the shard tars from disk, decode the kept keypoints and only the JPEG frames the clip
  needs, multi-scale crop + flip, and render heatmaps + PAFs from the augmented keypoints;
  * pose clips: 32 frames stride 2 -> 55 x 56 x 56 float rasters,
  * RGB + pose clips: also 8 RGB frames stride 8 at 224 x 224 (same start, same crop);
- mmaction2 1.2.0 (its own environment, numpy<2; see benchmarks/rasters.py):
  * RGB: DecordInit, SampleFrames 8x8, DecordDecode of the raw video, Resize short side 256,
    MultiScaleCrop 224 (scales 1 .. .66), Resize 224x224, Flip, FormatShape;
  * pose (PoseC3D's training pipeline) from the same keypoints held in memory:
    UniformSampleFrames 32, PoseDecode, PoseCompact, Resize, RandomResizedCrop, Resize 56x56,
    Flip, GeneratePoseTarget keypoints + limbs, FormatShape;
  * RGB + pose: both pipelines per clip (1 / (1/rgb + 1/pose) clips per CPU second).

The shards are built once with ``pipeline build --dataset generic --pose mediapipe`` (cached
under ~/.cache/integralaction/bench-loader) unless ``--shards`` names a built dataset.
"""

from __future__ import annotations

import os

# One core: set before numpy, numba and torch start their thread pools.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rasters import ensure_peer_venv  # noqa: E402  (same peer environment)
from report import cpu_model, load_note, positive_int, write_section  # noqa: E402

from pipeline.shards import decode_pose  # noqa: E402
from pipeline.skeletons import get_layout  # noqa: E402
from train.clips import ClipSpec  # noqa: E402
from train.data import ClipDataset, ClipRecipe, open_split  # noqa: E402

REAL = REPO / "tests" / "data" / "real"
CACHE = Path.home() / ".cache" / "integralaction" / "bench-loader"
RGB_CLIP, POSE_CLIP, INPUT = ClipSpec(8, 8), ClipSpec(32, 2), 224  # paper Table 1


# ----------------------------------------------------------------------------------------------
# Data


def build_shards(out: Path) -> Path:
    """Shards of the real videos, one split, built by the pipeline with mediapipe poses."""
    if (out / "dataset.json").exists():
        return out
    videos = sorted(p for p in REAL.iterdir() if p.suffix in (".mp4", ".avi"))
    out.parent.mkdir(parents=True, exist_ok=True)
    csv = out.parent / "videos.csv"
    csv.write_text("path,label,split\n" + "".join(f"{v.name},{v.stem},train\n" for v in videos))
    print(f"building shards of {len(videos)} videos in {out} (once) ...", file=sys.stderr)
    pipeline = Path(sys.executable).parent / "pipeline"
    cmd = [str(pipeline), "build", "--dataset", "generic", "--videos", str(REAL),
           "--annotations", str(csv), "--pose", "mediapipe", "--out", str(out),
           "--num-workers", "1", "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True)
    return out


# ----------------------------------------------------------------------------------------------
# Ours


def time_ours(shards: Path, recipe: ClipRecipe, clips: int, warmup: int = 4) -> dict:
    """Clips of the trainer's loader, one process, one thread; CPU and wall seconds."""
    split = open_split(str(shards), "train")
    dataset = ClipDataset(split, recipe, batch_size=1, seed=0, shuffle_buffer=1)
    stream = iter(dataset)
    for _ in range(warmup):  # numba kernels load, page cache fills
        next(stream)
    cpu, wall = time.process_time(), time.perf_counter()
    made = 0
    while made < clips:
        made += len(next(stream)["key"])
    return {
        "clips": made,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
    }


# ----------------------------------------------------------------------------------------------
# The peer: mmaction2 in its own environment

_PEER_SCRIPT = r"""
import json, sys, time
import cv2, numpy as np, torch
cv2.setNumThreads(1)
torch.set_num_threads(1)
from mmaction.datasets.transforms import (
    DecordInit, SampleFrames, DecordDecode, Resize, MultiScaleCrop, Flip, FormatShape,
    UniformSampleFrames, PoseDecode, PoseCompact, RandomResizedCrop, GeneratePoseTarget,
)
args = json.loads(sys.argv[1])
left, right = args["left"], args["right"]
rgb = [
    DecordInit(num_threads=1), SampleFrames(clip_len=8, frame_interval=8, num_clips=1),
    DecordDecode(), Resize(scale=(-1, 256)),
    MultiScaleCrop(224, scales=(1, 0.875, 0.75, 0.66), random_crop=False, max_wh_scale_gap=1),
    Resize(scale=(224, 224), keep_ratio=False), Flip(flip_ratio=0.5), FormatShape("NCHW"),
]
pose = [
    UniformSampleFrames(clip_len=32), PoseDecode(), PoseCompact(hw_ratio=1.0, allow_imgpad=True),
    Resize(scale=(-1, 64)), RandomResizedCrop(area_range=(0.56, 1.0)),
    Resize(scale=(56, 56), keep_ratio=False),
    Flip(flip_ratio=0.5, left_kp=left, right_kp=right),
    GeneratePoseTarget(sigma=0.6, use_score=True, with_kp=True, with_limb=True,
                       skeletons=[tuple(b) for b in args["bones"]], left_kp=left, right_kp=right),
    FormatShape("NCTHW_Heatmap"),
]
videos = args["videos"]
annos = []
for v in videos:
    with np.load(v["poses"]) as z:
        annos.append({k: z[k] for k in z.files})

def rgb_sample(i):
    v = videos[i % len(videos)]
    return {"filename": v["path"], "label": 0, "start_index": 0, "modality": "RGB"}

def pose_sample(i):
    a = annos[i % len(annos)]
    h, w = (int(x) for x in a["img_shape"])
    return {"keypoint": a["keypoint"].copy(), "keypoint_score": a["keypoint_score"].copy(),
            "total_frames": int(a["keypoint"].shape[1]), "img_shape": (h, w),
            "original_shape": (h, w), "label": 0, "start_index": 0, "modality": "Pose"}

def run(ops, make, n, warmup=2):
    for i in range(warmup):
        r = make(i)
        for op in ops:
            r = op.transform(r)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        r = make(i)
        for op in ops:
            r = op.transform(r)
    return {"clips": n, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}

out = {"rgb": run(rgb, rgb_sample, args["clips"]), "pose": run(pose, pose_sample, args["clips"])}
print(json.dumps(out))
"""


def ensure_decord(python: Path) -> None:
    """mmaction's RGB pipeline decodes with decord; add it to the shared peer environment."""
    if subprocess.run([str(python), "-c", "import decord"], capture_output=True).returncode:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "decord"],
            check=True,
            capture_output=True,
        )


def peer_inputs(shards: Path, tmp: Path) -> tuple[list[dict], str]:
    """Per video: the raw file and its keypoints as mmaction's pose annotations (.npz)."""
    split = open_split(str(shards), "train")
    sources = {}
    for sample in split.pipeline(kinds=("pose",)):
        key = sample["__key__"]
        keypoints, _, meta = decode_pose(sample)
        kp = np.transpose(keypoints, (1, 0, 2, 3))  # [M, T, V, 3]
        if kp.shape[0] == 0:  # no person anywhere: one empty person, as pyskl writes
            kp = np.zeros((1, keypoints.shape[0], keypoints.shape[2], 3), np.float32)
        path = tmp / f"{key}.npz"
        np.savez(
            path,
            keypoint=kp[..., :2].astype(np.float32),
            keypoint_score=kp[..., 2].astype(np.float32),
            img_shape=np.array([meta["height"], meta["width"]]),
        )
        sources[key] = {"path": str(REAL / Path(meta["source"]).name), "poses": str(path)}
    return [sources[k] for k in sorted(sources)], split.info.layout


def time_peer(shards: Path, clips: int) -> dict:
    python = ensure_peer_venv()
    ensure_decord(python)
    with tempfile.TemporaryDirectory() as tmp:
        videos, layout_name = peer_inputs(shards, Path(tmp))
        layout = get_layout(layout_name)
        args = {
            "videos": videos,
            "clips": clips,
            "bones": layout.bones.tolist(),
            "left": [int(a) for a, _ in layout.flip_pairs],
            "right": [int(b) for _, b in layout.flip_pairs],
        }
        proc = subprocess.run(
            [str(python), "-c", _PEER_SCRIPT, json.dumps(args)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the mmaction2 peer failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Report


def rate(t: dict, key: str = "cpu_s") -> float:
    return t["clips"] / t[key]


def combined(a: dict, b: dict, key: str = "cpu_s") -> float:
    """Clips per second when each clip costs one clip of ``a`` and one of ``b``."""
    return 1.0 / (1.0 / rate(a, key) + 1.0 / rate(b, key))


def format_table(ours: dict, peer: dict | None, channels: int = 55) -> str:
    lines = [
        "| clip | ours: clips per CPU-s | ours: clips/s wall | mmaction2: clips per CPU-s "
        "| mmaction2: clips/s wall | ours / mmaction2 (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [
        (f"pose: 32 frames stride 2, {channels}x56x56 rasters", ours["pose"], "pose"),
        ("RGB + pose: 8x224² stride 8 + 32 pose frames", ours["rgb_pose"], "rgb_pose"),
        ("RGB only: 8x224² stride 8", ours["rgb"], "rgb"),
    ]
    for name, t, kind in rows:
        ours_cpu, ours_wall = rate(t), rate(t, "wall_s")
        if peer is None:
            lines.append(f"| {name} | {ours_cpu:.1f} | {ours_wall:.1f} | | | |")
            continue
        if kind == "rgb_pose":
            p_cpu, p_wall = (
                combined(peer["rgb"], peer["pose"]),
                combined(peer["rgb"], peer["pose"], "wall_s"),
            )
        else:
            p_cpu, p_wall = rate(peer[kind]), rate(peer[kind], "wall_s")
        lines.append(
            f"| {name} | {ours_cpu:.1f} | {ours_wall:.1f} | {p_cpu:.1f} | {p_wall:.1f} "
            f"| **{ours_cpu / p_cpu:.1f}x** |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, help="a built dataset of the real videos")
    parser.add_argument(
        "--clips", type=positive_int, default=60, help="timed clips per kind and side"
    )
    parser.add_argument("--skip-peer", action="store_true", help="do not run mmaction2")
    parser.add_argument("--write", type=Path, help="markdown file whose loader section to replace")
    args = parser.parse_args(argv)
    if args.shards is not None and not (args.shards / "dataset.json").is_file():
        parser.error(f"--shards {args.shards}: not a built dataset (no dataset.json)")
    torch.set_num_threads(1)
    shards = args.shards or build_shards(CACHE / "shards")
    split = open_split(str(shards), "train")
    info = split.info
    channels = get_layout(info.layout).num_channels
    common = dict(
        input_size=INPUT,
        frame_stride=info.frame_stride,
        layout=info.layout,
        raster=info.raster,
    )
    load_before = os.getloadavg()[0]
    ours = {
        "pose": time_ours(shards, ClipRecipe(None, POSE_CLIP, **common), args.clips),
        "rgb_pose": time_ours(shards, ClipRecipe(RGB_CLIP, POSE_CLIP, **common), args.clips),
        "rgb": time_ours(shards, ClipRecipe(RGB_CLIP, None, **common), args.clips),
    }
    peer = None if args.skip_peer else time_peer(shards, args.clips)
    load_after = os.getloadavg()[0]
    table = format_table(ours, peer, channels)
    print(table)
    print(json.dumps({"ours": ours, "mmaction2": peer}))
    if args.write:
        command = "python benchmarks/loader.py " + " ".join(sys.argv[1:])
        source = (
            "videos of the built dataset given with --shards"
            if args.shards
            else "real videos (tests/data/real), built with "
            "`pipeline build --dataset generic --pose mediapipe`"
        )
        body = "\n".join(
            [
                "## Clip loading (one core): shard loader vs mmaction2 (`benchmarks/loader.py`)",
                "",
                f"`{command.strip()}` on {datetime.date.today().isoformat()}, {cpu_model()} "
                f"({os.cpu_count()} cores visible; one thread per side), Python "
                f"{platform.python_version()}, torch {torch.__version__}; "
                f"{load_note(load_before, load_after, 1)}; CPU-time rates are steadier than "
                "wall-clock rates on a shared machine.",
                "",
                f"Same {len(split.index)} {source} (short side {info.short_side}, frame "
                f"stride {info.frame_stride}, layout {info.layout}); "
                f"{args.clips} timed training clips per row and side, after a warm-up. Ours: "
                "`train.data.ClipDataset` in-process (tar read, JPEG decode of the clip's "
                "frames, multi-scale crop + flip, rasters rendered from the augmented "
                "keypoints). mmaction2 1.2.0: decord decode of the raw video + SampleFrames / "
                "Resize / MultiScaleCrop / Flip for RGB; PoseC3D's UniformSampleFrames / "
                "PoseDecode / PoseCompact / Resize / RandomResizedCrop / Flip / "
                "GeneratePoseTarget (keypoints + limbs) for pose, from the same keypoints in "
                "memory. RGB + pose for mmaction2 = both pipelines per clip. Rates are clips "
                "per CPU-second of the process (its own `process_time`), the ratio too.",
                "",
                table,
            ]
        )
        write_section(args.write, "loader", body)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
