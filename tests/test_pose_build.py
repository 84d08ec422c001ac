"""mediapipe quality on the real clips as a user gets it: `pipeline build --dataset generic
--pose mediapipe` at the default options (frame stride 2, short side 256), read back from the
pose shards and index.parquet (docs/pose.md, "Persons per frame on the real videos").

One build of four clips (about 400 kept frames through mediapipe) serves the module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import REAL, load_npy, run_cli, samples_of

from pipeline.persons import PersonRules
from pipeline.pose import create_estimator
from pipeline.video import decode_video

CLIPS = (
    "arm_wrestling.mp4",
    "basketball_gym_multi.mp4",
    "closeup_face.avi",
    "two_people_1080p.mp4",
)


def _build_args(out: Path, csv_path: Path, *extra: str) -> list:
    return [
        "build", "--dataset", "generic", "--videos", REAL, "--annotations", csv_path,
        "--pose", "mediapipe", "--num-workers", "1", "--out", out, "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pose-build")
    csv_path = root / "clips.csv"
    csv_path.write_text(
        "path,label,split\n" + "".join(f"{c},{Path(c).stem},train\n" for c in CLIPS)
    )
    out = root / "out"
    run_cli("pipeline", *_build_args(out, csv_path))
    index = {r["key"]: r for r in pq.read_table(out / "train" / "index.parquet").to_pylist()}
    poses = samples_of(out / "train", "pose")
    keypoints = {key: load_npy(files["keypoints.npy"]) for key, files in poses.items()}
    persons = {key: (kp[..., 2] > 0).any(axis=-1).sum(axis=-1) for key, kp in keypoints.items()}
    return {
        "out": out,
        "csv": csv_path,
        "index": index,
        "keypoints": keypoints,
        "persons": persons,
        "meta": {key: json.loads(files["json"]) for key, files in poses.items()},
    }


def test_defaults_were_used(built):
    # The options a user gets without asking: stride 2, stored short side 256.
    for key, meta in built["meta"].items():
        assert meta["frame_stride"] == 2 and min(meta["height"], meta["width"]) == 256, key


def test_closeup_face_is_not_a_body(built):
    # A face filling the frame: at the upscaled size mediapipe saw a second person on it in most
    # frames, and a face with shoulders is no body pose. Measured: 0 frames with a person.
    assert built["persons"]["closeup_face"].max(initial=0) <= 1
    assert built["index"]["closeup_face"]["person_fraction"] <= 0.2


def test_two_person_clips_keep_their_people(built):
    # Measured: arm_wrestling 0.76, two_people_1080p 0.97.
    assert built["index"]["arm_wrestling"]["person_fraction"] >= 0.7
    assert built["index"]["two_people_1080p"]["person_fraction"] >= 0.7


def test_small_players_in_the_gym_survive(built):
    # Measured: 0.79, and 50 of 150 kept frames with two or more persons.
    assert built["index"]["basketball_gym_multi"]["person_fraction"] >= 0.6
    assert (built["persons"]["basketball_gym_multi"] >= 2).sum() >= 5


def test_person_fraction_counts_plausible_persons(built):
    for key, row in built["index"].items():
        with_person = built["persons"][key] > 0
        assert row["person_fraction"] == pytest.approx(with_person.mean(), abs=1e-6), key
        kp = built["keypoints"][key]
        hw = (built["meta"][key]["height"], built["meta"][key]["width"])
        present = (kp[..., 2] > 0).any(axis=-1)
        # Every stored person passes the rules in the stored frame too (they are scale-free).
        from pipeline.persons import plausible_persons

        assert plausible_persons(kp, hw)[present].all(), key


def test_upscaled_clip_was_estimated_at_its_source_size(built):
    # basketball_gym_multi is 426x240, stored at 456x256: the build's keypoints are the
    # estimator's on the 426x240 frames, mapped to stored pixels.
    video = decode_video(str(REAL / "basketball_gym_multi.mp4"), 2, 256, keep_native=True)
    assert video.pose_frames.shape[1:3] == (240, 426)
    expected = video.pose_to_stored(create_estimator("mediapipe").estimate(video.pose_frames))
    np.testing.assert_array_equal(built["keypoints"]["basketball_gym_multi"], expected)


def test_resume_with_other_rules_is_refused(built):
    out, csv_path = built["out"], built["csv"]
    options = json.loads((out / "_build" / "options.json").read_text())
    assert options["person_rules"] == {
        "filter_persons": True,
        "min_score": 0.5,
        "min_body_joints": 4,
        "min_limb_joints": 2,
        "min_box_fraction": 0.125,
    }
    assert options["person_rules"] == vars(PersonRules())
    assert options["pipeline_version"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["build"]["person_rules"] == options["person_rules"]
    # The same command resumes (nothing to do); other rules would mix two rule sets.
    same = run_cli("pipeline", *_build_args(out, csv_path))
    assert "already done" in same.stdout
    other = run_cli(
        "pipeline", *_build_args(out, csv_path, "--pose-option", "min_score=0.3"), check=False
    )
    assert other.returncode != 0
    assert "person_rules" in other.stderr and "Traceback" not in other.stderr
    bad = run_cli(
        "pipeline", *_build_args(out, csv_path, "--pose-option", "min_body_joints=many"),
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "min_body_joints must be a whole number" in bad.stderr
