"""`pipeline build` end to end: real local Ray, real decoding, real pose files, real S3 server."""

from __future__ import annotations

import csv
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import (
    BIN,
    dataset_json,
    load_npy,
    read_tar,
    real_video,
    run_cli,
    s3_server,
    s3fs_client,
    samples_of,
)

from pipeline.build import EXIT_FAILED, EXIT_PARTIAL
from pipeline.formats import read_kinetics_skeleton, read_ntu_skeleton
from pipeline.pose.precomputed import rescale_keypoints
from pipeline.shards import stored_size
from pipeline.skeletons import get_layout

pytestmark = pytest.mark.slow

SYNTH_SMALL = ("--num-classes", "3", "--videos-per-class", "4", "--frames", "24", "--seed", "3")


@pytest.fixture(scope="module")
def kinetics_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("kinetics_raw")
    run_cli("pipeline", "synth", "--dataset", "kinetics", "--out", raw, *SYNTH_SMALL)
    return raw


def _kinetics_build_args(raw: Path, out: Path, *extra: str) -> list[str]:
    return [
        "build", "--dataset", "kinetics", "--videos", raw / "videos",
        "--annotations", raw / "annotations.csv", "--classes", raw / "classes.txt",
        "--pose", "precomputed", "--poses", raw / "skeletons", "--out", out,
        "--num-workers", "2", "--short-side", "64", "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def kinetics_built(kinetics_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kinetics_built") / "shards"
    run_cli("pipeline", *_kinetics_build_args(kinetics_raw, out))
    return out


def _annotations(raw: Path) -> list[dict[str, str]]:
    with open(raw / "annotations.csv") as f:
        return list(csv.DictReader(f))


def test_kinetics_build_layout_and_index(kinetics_raw, kinetics_built):
    rows = _annotations(kinetics_raw)
    info = dataset_json(kinetics_built)
    classes = (kinetics_raw / "classes.txt").read_text().split("\n")
    assert info["classes"] == [c for c in classes if c]
    assert info["layout"] == "openpose18" and info["frame_stride"] == 2
    assert info["raster_channels"] == 18 + 2 * 17
    splits = sorted({r["split"] for r in rows})
    assert sorted(info["splits"]) == splits
    for split in splits:
        split_dir = kinetics_built / split
        index = pq.read_table(split_dir / "index.parquet").to_pylist()
        expected = {
            f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
            for r in rows
            if r["split"] == split
        }
        assert {r["key"] for r in index} == expected
        # Shards with the same number hold the same keys in the same order.
        numbers = sorted({r["shard"] for r in index})
        assert len(numbers) >= 2
        for n in numbers:
            keys = {}
            for kind in ("rgb", "pose", "raster"):
                members = read_tar(split_dir / f"{kind}-{n:06d}.tar")
                order = []
                for name, _ in members:
                    key = name.split(".", 1)[0]
                    if not order or order[-1] != key:
                        order.append(key)
                keys[kind] = order
            assert keys["rgb"] == keys["pose"] == keys["raster"]
            assert keys["pose"] == [r["key"] for r in index if r["shard"] == n]
        assert pq.read_table(split_dir / "errors.parquet").num_rows == 0


def test_kinetics_keypoints_equal_ground_truth(kinetics_raw, kinetics_built):
    """Stored keypoints are the generator's ground truth, mapped to the stored frame size."""
    checked = 0
    for split_dir in (kinetics_built / "train", kinetics_built / "val"):
        index = {r["key"]: r for r in pq.read_table(split_dir / "index.parquet").to_pylist()}
        poses = samples_of(split_dir, "pose")
        rgb = samples_of(split_dir, "rgb")
        for key, members in poses.items():
            row = index[key]
            meta = json.loads(members["json"])
            kp = load_npy(members["keypoints.npy"])
            frames = load_npy(members["frames.npy"])
            src_h, src_w = meta["source_height"], meta["source_width"]
            skel = read_kinetics_skeleton(kinetics_raw / "skeletons" / f"{key}.json", src_w, src_h)
            by_index = dict(zip(skel.frame_index.tolist(), skel.keypoints, strict=True))
            assert (row["height"], row["width"]) == stored_size(src_h, src_w, 64)
            np.testing.assert_array_equal(frames, np.arange(0, row["source_frames"], 2))
            assert sorted(ext for ext in rgb[key]) == sorted(f"{f:06d}.jpg" for f in frames)
            for j, f in enumerate(frames):
                truth = by_index[int(f) + 1]
                truth = truth[np.argsort(-truth[..., 2].mean(-1), kind="stable")]
                want = rescale_keypoints(truth, (src_h, src_w), (row["height"], row["width"]))
                present = want[..., 2].max(-1) > 0
                got = kp[j]
                assert got.shape[1:] == (18, 3)
                np.testing.assert_allclose(got[: present.sum()], want[present], atol=1e-4)
                assert not got[present.sum() :].any()
                checked += 1
    assert checked > 50


def test_rasters_match_keypoints(kinetics_built):
    from pipeline.raster import dequantize_raster, render_clip

    split_dir = kinetics_built / "train"
    poses, rasters = samples_of(split_dir, "pose"), samples_of(split_dir, "raster")
    key = sorted(poses)[0]
    kp = load_npy(poses[key]["keypoints.npy"])
    with np.load(__import__("io").BytesIO(rasters[key]["raster.npz"])) as npz:
        heat, paf = npz["heatmaps"], npz["pafs"]
    assert heat.dtype == np.uint8 and paf.dtype == np.int8
    h, w = heat.shape[2:]
    expected = render_clip(kp, get_layout("openpose18").bones, (h, w), scale=0.25)
    got = dequantize_raster(heat, paf)
    assert np.abs(got[:, :18] - expected[:, :18]).max() <= 1 / 255 + 1e-6
    assert np.abs(got[:, 18:] - expected[:, 18:]).max() <= 1 / 127 + 1e-6
    assert expected[:, :18].max() > 0.5  # the figure is there


def test_verify_passes_on_build(kinetics_built):
    proc = run_cli("pipeline", "verify", kinetics_built)
    assert proc.returncode == 0


def test_resume_of_finished_build_changes_nothing(kinetics_raw, kinetics_built):
    before = {p: p.stat().st_mtime_ns for p in kinetics_built.rglob("*.tar")}
    proc = run_cli("pipeline", *_kinetics_build_args(kinetics_raw, kinetics_built))
    assert "already done" in proc.stdout
    after = {p: p.stat().st_mtime_ns for p in kinetics_built.rglob("*.tar")}
    assert before == after


def test_other_build_in_out_is_refused(kinetics_raw, kinetics_built):
    proc = run_cli(
        "pipeline", *_kinetics_build_args(kinetics_raw, kinetics_built, "--frame-stride", "4"),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "different build" in proc.stderr and "frame_stride" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        (["--dataset", "youtube"], "Invalid value for '--dataset'", 2),
        (["--dataset", "kinetics", "--videos", "/nonexistent/videos"], "does not exist", 1),
        (["--dataset", "kinetics", "--pose", "precomputed"], "needs --poses", 2),
        (["--dataset", "kinetics", "--retry-errors", "--overwrite"], "exclude each other", 2),
    ],
)
def test_user_mistakes_give_one_line_errors(tmp_path, kinetics_raw, args, message, status):
    base = {
        "--videos": str(kinetics_raw / "videos"),
        "--annotations": str(kinetics_raw / "annotations.csv"),
    }
    full = list(args)
    for flag, value in base.items():
        if flag not in full:
            full += [flag, value]
    proc = run_cli("pipeline", "build", *full, "--out", tmp_path / "o", check=False)
    assert proc.returncode == status  # 2: a command-line mistake, 1: bad input
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def _one_line_failure(proc) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unusable_annotations_say_why(tmp_path, kinetics_raw):
    header = "label,youtube_id,time_start,time_end,split\n"
    cases = {
        "header.csv": ("foo,bar\n1,2\n", "no label, youtube_id, time_start, time_end column"),
        "short.csv": (header + "a,b,25\n", "1 annotation row read, 1 malformed (first: "),
        "latin1.csv": (header.encode() + b"caf\xe9,x,1,2,train\n", "latin1.csv: not UTF-8"),
        "empty.csv": ("", "no usable videos: 0 annotation rows read"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        args = _kinetics_build_args(kinetics_raw, tmp_path / "out")
        args[args.index("--annotations") + 1] = path
        line = _one_line_failure(run_cli("pipeline", *args, check=False))
        assert expected in line, (name, line)
    assert not (tmp_path / "out").exists()


def test_a_ray_address_nothing_answers_fails_at_once(tmp_path, kinetics_raw):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _kinetics_build_args(
        kinetics_raw, tmp_path / "out", "--ray-address", f"127.0.0.1:{port}"
    )
    line = _one_line_failure(run_cli("pipeline", *args, check=False, timeout=120))
    assert f"--ray-address 127.0.0.1:{port}: no Ray cluster answers there" in line
    assert not (tmp_path / "out").exists()


def test_a_ray_address_where_something_else_listens_fails_at_once(tmp_path, kinetics_raw):
    # An HTTP server, not Ray's gRPC: ray.init would retry it without end.
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        args = _kinetics_build_args(kinetics_raw, tmp_path / "out", "--ray-address", address)
        line = _one_line_failure(run_cli("pipeline", *args, check=False, timeout=120))
    finally:
        server.shutdown()
    assert f"--ray-address {address}: something listens there but it is not a Ray cluster" in line
    assert not (tmp_path / "out").exists()


def test_ray_address_mistakes_are_one_line_and_ray_address_env_is_the_default(
    tmp_path, kinetics_raw
):
    for address, expected in (
        ("auto", "--ray-address auto: Could not find any running Ray instance"),
        ("bogus", "--ray-address bogus: Invalid address format"),
    ):
        args = _kinetics_build_args(kinetics_raw, tmp_path / "out", "--ray-address", address)
        assert expected in _one_line_failure(run_cli("pipeline", *args, check=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli(
        "pipeline",
        *_kinetics_build_args(kinetics_raw, tmp_path / "out"),
        env={"RAY_ADDRESS": f"127.0.0.1:{port}"},
        check=False,
    )
    assert f"--ray-address 127.0.0.1:{port}: no Ray cluster answers" in _one_line_failure(proc)
    assert not (tmp_path / "out").exists()


def test_out_that_is_not_a_build_is_refused(tmp_path, kinetics_raw):
    out = tmp_path / "notabuild"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = run_cli("pipeline", *_kinetics_build_args(kinetics_raw, out, "--overwrite"), check=False)
    assert proc.returncode != 0 and "holds no pipeline build" in proc.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def test_bad_inputs_are_logged_and_the_build_goes_on(tmp_path, kinetics_raw):
    raw = tmp_path / "raw"
    shutil.copytree(kinetics_raw, raw)
    rows = _annotations(raw)
    victims = [r for r in rows if r["split"] == "train"][:4]
    stems = [
        f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}" for r in victims
    ]
    # 1: truncated video; 2: zero-byte video; 3: unreadable pose file; 4: pose file missing.
    video = raw / "videos" / f"{stems[0]}.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    (raw / "videos" / f"{stems[1]}.mp4").write_bytes(b"")
    (raw / "skeletons" / f"{stems[2]}.json").write_text('{"data": [ {"frame_index": 1, ')
    (raw / "skeletons" / f"{stems[3]}.json").unlink()
    with open(raw / "annotations.csv", "a") as f:
        f.write("some class,,1,2,train\n")  # malformed: no youtube id
        f.write("not a listed class,abcdefghijk,0,10,train\n")  # filtered by --classes
        f.write(f"{victims[0]['label']},zzzzzzzzzzz,0,10,train\n")  # listed, video missing
    out = tmp_path / "out"
    proc = run_cli("pipeline", *_kinetics_build_args(raw, out), check=False)
    # At least 5 of 12 videos lost: far above --max-error-fraction 0.05.
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert "errors.parquet" in proc.stdout and "exit 4" in proc.stdout
    errors = pq.read_table(out / "train" / "errors.parquet").to_pylist()
    by_source = {Path(e["source"]).name: e for e in errors}
    index = {r["key"]: r for r in pq.read_table(out / "train" / "index.parquet").to_pylist()}
    # A truncated file is either decoded as far as it goes or logged; never silently dropped.
    assert (stems[0] in index) != (f"{stems[0]}.mp4" in by_source)
    if f"{stems[0]}.mp4" in by_source:
        assert by_source[f"{stems[0]}.mp4"]["stage"] == "decode"
    assert by_source[f"{stems[1]}.mp4"]["stage"] == "decode"
    assert by_source[f"{stems[2]}.mp4"]["stage"] == "pose"
    assert "line" in by_source[f"{stems[2]}.mp4"]["reason"]
    assert by_source[f"{stems[3]}.mp4"]["stage"] == "pose"
    assert any(e["stage"] == "annotation" and ":" in e["source"] for e in errors)
    assert any(e["stage"] == "find" and "zzzzzzzzzzz" in e["source"] for e in errors)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(index) + sum(1 for s in stems if f"{s}.mp4" in by_source) == len(train_rows)
    # Filtered rows are counted in the summary and listed in filtered.parquet, not as errors.
    assert not any("abcdefghijk" in e["source"] for e in errors)
    filtered = pq.read_table(out / "train" / "filtered.parquet").to_pylist()
    assert [(r["label_name"], r["reason"]) for r in filtered] == [
        ("not a listed class", "class not in --classes")
    ]
    assert re.search(r"filtered \(class not in --classes\)\s+1 *\n", proc.stdout)
    assert re.search(r"present but not listed\s+0 *\n", proc.stdout)
    for stage in ("decode", "pose", "find", "annotation"):
        assert stage in proc.stdout  # the summary names the stages that failed
    # The same build with a tolerance above the loss: the "partial" exit status.
    again = run_cli("pipeline", *_kinetics_build_args(raw, out, "--max-error-fraction", "0.9"),
                    check=False)  # fmt: skip
    assert again.returncode == EXIT_PARTIAL, again.stderr


def test_ntu_build_both_protocols(tmp_path):
    raw = tmp_path / "ntu"
    run_cli("pipeline", "synth", "--dataset", "ntu", "--out", raw, *SYNTH_SMALL)
    results = {}
    for protocol in ("xsub", "xview"):
        out = tmp_path / f"out_{protocol}"
        run_cli(
            "pipeline", "build", "--dataset", "ntu", "--videos", raw / "videos",
            "--pose", "precomputed", "--poses", raw / "skeletons", "--protocol", protocol,
            "--out", out, "--num-workers", "2", "--short-side", "64", "--quiet",
        )  # fmt: skip
        info = dataset_json(out)
        assert info["layout"] == "ntu25" and info["person_order"] == "track"
        assert len(info["classes"]) == 60 and info["classes"][0] == "drink water"
        splits = {s: pq.read_table(out / s / "index.parquet").to_pylist() for s in ("train", "val")}
        assert splits["train"] and splits["val"]
        results[protocol] = {s: {r["key"] for r in rows} for s, rows in splits.items()}
        for r in splits["train"]:
            name = r["key"].removesuffix("_rgb")
            assert r["label"] == int(name[-3:]) - 1
            performer, camera = int(name[9:12]), int(name[5:8])
            if protocol == "xsub":
                assert performer in (
                    1,
                    2,
                    4,
                    5,
                    8,
                    9,
                    13,
                    14,
                    15,
                    16,
                    17,
                    18,
                    19,
                    25,
                    27,
                    28,
                    31,
                    34,
                    35,
                    38,
                )
            else:
                assert camera in (2, 3)
        # Stored keypoints follow the skeleton file's bodies (tracks), rescaled.
        poses = samples_of(out / "train", "pose")
        key = sorted(poses)[0]
        meta = json.loads(poses[key]["json"])
        skel = read_ntu_skeleton(raw / "skeletons" / f"{key.removesuffix('_rgb')}.skeleton")
        frames = load_npy(poses[key]["frames.npy"])
        want = rescale_keypoints(
            skel.keypoints[frames], (1080, 1920), (meta["height"], meta["width"])
        )
        got = load_npy(poses[key]["keypoints.npy"])
        np.testing.assert_allclose(got, want[:, : got.shape[1]], atol=1e-4)
    assert results["xsub"]["train"] != results["xview"]["train"]


def test_mimetics_build_matches_classes_by_name(tmp_path):
    raw = tmp_path / "mim"
    run_cli("pipeline", "synth", "--dataset", "mimetics", "--out", raw, *SYNTH_SMALL)
    classes = [c for c in (raw / "classes.txt").read_text().splitlines() if c]
    # The model's class list: reversed order, upper case, plus a class Mimetics does not have.
    model_classes = tmp_path / "model_classes.txt"
    model_classes.write_text(
        "\n".join(["unrelated class"] + [c.upper() for c in reversed(classes)])
    )
    out = tmp_path / "out"
    run_cli(
        "pipeline", "build", "--dataset", "mimetics", "--videos", raw / "videos",
        "--annotations", raw / "annotations.csv", "--classes", model_classes,
        "--pose", "precomputed", "--poses", raw / "skeletons", "--out", out, "--quiet",
        "--short-side", "64",
    )  # fmt: skip
    info = dataset_json(out)
    assert list(info["splits"]) == ["test"]
    index = pq.read_table(out / "test" / "index.parquet").to_pylist()
    rows = {r["youtube_id"]: r["label"] for r in _annotations(raw)}
    for r in index:
        youtube_id = r["key"][: -len("_000000_000000")]
        assert info["classes"][r["label"]].lower() == rows[youtube_id].lower()


def test_generic_build_on_real_footage_with_mediapipe(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("arm_wrestling.mp4", "closeup_face.avi"):
        os.symlink(real_video(name), videos / name)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,label,split\narm_wrestling.mp4,arm wrestling,train\n"
        "closeup_face.avi,face,train\ncorrupt.mp4,face,train\n"
    )
    out = tmp_path / "out"
    proc = run_cli(
        "pipeline", "build", "--dataset", "generic", "--videos", videos,
        "--annotations", csv_path, "--pose", "mediapipe", "--out", out, "--frame-stride", "4",
        "--num-workers", "1", "--quiet",
        check=False,
    )  # fmt: skip
    assert proc.returncode == EXIT_FAILED, proc.stderr  # 1 of 3 videos lost: above 5 %
    index = {r["key"]: r for r in pq.read_table(out / "train" / "index.parquet").to_pylist()}
    assert set(index) == {"arm_wrestling", "closeup_face"}
    assert index["arm_wrestling"]["person_fraction"] > 0.6
    assert index["arm_wrestling"]["num_persons"] >= 1
    errors = pq.read_table(out / "train" / "errors.parquet").to_pylist()
    assert [(Path(e["source"]).name, e["stage"]) for e in errors] == [("corrupt.mp4", "decode")]
    assert dataset_json(out)["layout"] == "coco17"
    assert "samples written" in proc.stdout
    run_cli("pipeline", "verify", out)


def test_build_from_and_to_s3(tmp_path, kinetics_raw):
    with s3_server() as env:
        fs = s3fs_client()
        fs.put(str(kinetics_raw) + "/", "data/raw/", recursive=True)
        run_cli(
            "pipeline", "build", "--dataset", "kinetics", "--videos", "s3://data/raw/videos",
            "--annotations", "s3://data/raw/annotations.csv",
            "--classes", "s3://data/raw/classes.txt", "--pose", "precomputed",
            "--poses", "s3://data/raw/skeletons", "--out", "s3://data/shards",
            "--short-side", "64", "--num-workers", "2", "--quiet",
            env=env,
        )  # fmt: skip
        fs.invalidate_cache()
        names = fs.ls("data/shards/train", detail=False)
        assert any(n.endswith("rgb-000000.tar") for n in names)
        assert not any(".tmp-" in n for n in names)
        info = json.loads(fs.cat("data/shards/dataset.json"))
        index = pq.read_table(fs.open("data/shards/train/index.parquet")).to_pylist()
        assert len(index) == info["splits"]["train"]["samples"] > 0
        run_cli("pipeline", "verify", "s3://data/shards", env=env)


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_killed_build_resumes_to_the_same_dataset(tmp_path, kinetics_raw):
    args = ["--samples-per-shard", "1", "--num-workers", "1"]
    reference = tmp_path / "reference"
    run_cli("pipeline", *_kinetics_build_args(kinetics_raw, reference, *args))

    out = tmp_path / "resumed"
    cmd = [str(BIN / "pipeline"), *map(str, _kinetics_build_args(kinetics_raw, out, *args))]
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    records = out / "_build" / "train"
    assert _wait_for(lambda: records.exists() and len(list(records.glob("*.json"))) >= 2, 120)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(1.0)  # let orphaned Ray workers notice their driver is gone
    done_before = {p.name for p in records.glob("*.json")}
    assert 2 <= len(done_before) < len(list((reference / "_build" / "train").glob("*.json")))
    finished = {
        p: p.stat().st_mtime_ns
        for name in done_before
        for p in (out / "train").glob(f"*-{name[:-5]}.tar")
    }

    run_cli("pipeline", *_kinetics_build_args(kinetics_raw, out, *args))
    # Completed shards were left untouched.
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert not list(out.rglob(".tmp-*"))
    for split in ("train", "val"):
        ref_tars = sorted(p.name for p in (reference / split).glob("*.tar"))
        assert ref_tars == sorted(p.name for p in (out / split).glob("*.tar"))
        for name in ref_tars:
            assert read_tar(reference / split / name) == read_tar(out / split / name), name
        ref_index = pq.read_table(reference / split / "index.parquet").to_pylist()
        new_index = pq.read_table(out / split / "index.parquet").to_pylist()
        assert ref_index == new_index
        assert len({r["key"] for r in new_index}) == len(new_index)


def test_shards_equal_the_float_render_then_quantise_path(kinetics_raw, tmp_path, monkeypatch):
    """Issue 15.2 at build level: rendering straight into the stored dtypes writes the same bytes
    as rendering float32 rasters and quantising them (the path before it), for every shard."""
    from pipeline import raster
    from pipeline.build import (
        BuildOptions,
        build_shard,
        load_build_manifest,
        plan_shards,
        shard_context,
    )

    def float_then_quantise(keypoints, bones, out_hw, **params):
        return raster.quantize_raster(
            raster.render_clip(keypoints, bones, out_hw, **params), np.asarray(keypoints).shape[2]
        )

    def build(out: Path) -> dict[str, bytes]:
        options = BuildOptions(
            dataset="kinetics", videos=str(kinetics_raw / "videos"),
            annotations=str(kinetics_raw / "annotations.csv"),
            classes=str(kinetics_raw / "classes.txt"), pose="precomputed",
            poses=str(kinetics_raw / "skeletons"), out=str(out), short_side=64,
            samples_per_shard=3,
        )  # fmt: skip
        manifest = load_build_manifest(options)
        ctx = shard_context(options, manifest)
        for specs in plan_shards(manifest, options.seed, options.samples_per_shard, None).values():
            for spec in specs:
                build_shard(spec, ctx)
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.tar"))}

    today = build(tmp_path / "quantised")
    monkeypatch.setattr(raster, "render_clip_quantized", float_then_quantise)
    before = build(tmp_path / "float")
    assert len(today) >= 3 and any(name.startswith("train/raster-") for name in today)
    assert today.keys() == before.keys()
    assert [n for n in today if today[n] != before[n]] == []
