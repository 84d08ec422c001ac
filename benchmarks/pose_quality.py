"""mediapipe on the real clips at the build's default settings: persons per frame, before and
after the plausibility rules, and person_fraction as `pipeline build` writes it.

    python benchmarks/pose_quality.py [--out DIR] [--show KEY ...]

Runs `pipeline build --dataset generic --pose mediapipe` with default options (frame stride 2,
short side 256) over tests/data/real, reads the pose shards and index.parquet, and runs the
landmarker once more on the same frames (decoded as the build decodes them) to count what the
rules dropped. Prints the markdown table of docs/pose.md ("Persons per frame on the real
videos"); with --show, also draws `pipeline show` pictures of those samples into --out.
Counts, not times: it may run on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REAL = REPO / "tests" / "data" / "real"
BIN = Path(sys.executable).parent
CLIPS = (
    "arm_wrestling.mp4",
    "basketball_gym_multi.mp4",
    "closeup_face.avi",
    "pool_partial_person.mp4",
    "two_people_1080p.mp4",
)


def build(out: Path) -> None:
    csv_path = out.parent / "clips.csv"
    csv_path.write_text(
        "path,label,split\n" + "".join(f"{c},{Path(c).stem},train\n" for c in CLIPS)
    )
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    cmd = [
        str(BIN / "pipeline"), "build", "--dataset", "generic", "--videos", str(REAL),
        "--annotations", str(csv_path), "--pose", "mediapipe", "--num-workers", "1",
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    print("$", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, check=True, env=env)


def stored_keypoints(shards: Path) -> dict[str, np.ndarray]:
    """key -> stored keypoints, read through the format's own reader (pose shards only)."""
    from pipeline.shards import Dataset

    split = Dataset.open(str(shards)).split("train")
    return {s["__key__"]: s["keypoints.npy"] for s in split.pipeline(kinds=("pose",))}


def histogram(counts: np.ndarray) -> str:
    return "/".join(str(int((counts == n).sum())) for n in (0, 1, 2)) + (
        f"/{int((counts >= 3).sum())}"
    )


def first_failed_rule(pose: np.ndarray, hw: tuple[int, int], rules) -> str | None:
    """Which rule drops ``pose`` first (body joints, head-only, box), or None if it passes."""
    from dataclasses import replace

    from pipeline.persons import plausible_persons

    if plausible_persons(pose, hw, rules):
        return None
    only_body = replace(rules, min_limb_joints=0, min_box_fraction=0.0)
    if not plausible_persons(pose, hw, only_body):
        return "body"
    if not plausible_persons(pose, hw, replace(rules, min_box_fraction=0.0)):
        return "head"
    return "box"


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--out", type=Path, help="keep the build (and pictures) here")
    parser.add_argument("--show", nargs="*", default=[], help="sample keys to draw")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from pipeline.pose import create_estimator
    from pipeline.video import decode_video

    work = Path(args.out or tempfile.mkdtemp(prefix="pose-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "shards"
    build(out)
    index = {r["key"]: r for r in pq.read_table(out / "train" / "index.parquet").to_pylist()}
    stored = stored_keypoints(out)

    est = create_estimator("mediapipe", reuse_landmarker=False)
    rows = []
    for clip in CLIPS:
        key = Path(clip).stem
        video = decode_video(str(REAL / clip), 2, 256, keep_native=True)
        pose_hw = video.pose_frames.shape[1:3]
        per_frame = est.estimate_per_frame(video.pose_frames)
        raw = np.array([len(p) for p in per_frame])
        dropped = {"body": 0, "head": 0, "box": 0}
        for poses in per_frame:
            for pose in poses:
                rule = first_failed_rule(pose, pose_hw, est.person_rules)
                if rule:
                    dropped[rule] += 1
        # The build's keypoints equal this estimator's on the same frames, mapped to storage.
        expected = video.pose_to_stored(est.estimate(video.pose_frames))
        kp = stored[key]
        same = "yes" if np.array_equal(kp, expected) else "NO"
        counts = (kp[..., 2] > 0).any(axis=-1).sum(axis=-1)
        src = f"{video.source_width}x{video.source_height}"
        size = f"{src} -> {video.frames.shape[2]}x{video.frames.shape[1]}"
        rows.append(
            f"| {clip} | {size} | {pose_hw[1]}x{pose_hw[0]} | {len(per_frame)} | "
            f"{histogram(raw)} | {dropped['body']}/{dropped['head']}/{dropped['box']} | "
            f"{histogram(counts)} | {kp.shape[1]} | {index[key]['person_fraction']:.2f} | {same} |"
        )
    print(
        "| video | source -> stored | pose input | kept frames | raw 0/1/2/3+ | dropped: "
        "body/head/box | stored 0/1/2/3+ | P | person_fraction | build = estimator |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for key in args.show:
        png = work / f"{key}.png"
        subprocess.run(
            [str(BIN / "pipeline"), "show", str(out), "--key", key, "-o", str(png)], check=True
        )
        print(f"wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
