"""`pipeline inspect | verify | show | export` on a small hand-made dataset, local and on S3.

The dataset is written once per module with the shard writer itself (ShardSetWriter,
DatasetInfo.save and the build's Parquet schemas), so these tests take seconds; one test runs
the real `pipeline build` (mediapipe, one real video) and checks the tools on its output.
Every corruption test damages a copy of the dataset in one way and expects `verify` to exit 1
naming that problem.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from helpers import (
    REAL,
    load_npy,
    run_cli,
    s3_server,
    s3fs_client,
    tar_groups,
    write_tar_groups,
)
from PIL import Image

from pipeline.persons import persons_per_frame
from pipeline.raster import quantize_raster, render_clip
from pipeline.shards import (
    ERRORS_SCHEMA,
    INDEX_SCHEMA,
    DatasetInfo,
    Sample,
    ShardSetWriter,
    decode_pose,
    reader,
    write_table,
)
from pipeline.skeletons import get_layout
from pipeline.tools import export, inspect_dataset, show, verify
from pipeline.tools.show import PERSON_COLOURS

LAYOUT = get_layout("coco17")
CLASSES = ["drink", "jump", "wave"]
H, W = 48, 64  # stored frame size (multiples of 4): rasters are 12 x 16
STRIDE = 2
# split -> shards -> (key, label, kept frames, persons); "delta" has no person at all, and
# "-dash_key" begins with '-' as YouTube ids may.
PLAN = {
    "train": [
        [("alpha", 0, 5, 2), ("-dash_key", 1, 4, 1), ("bravo", 2, 6, 2)],
        [("charlie", 0, 3, 1), ("delta", 1, 4, 0)],
    ],
    "val": [[("echo", 2, 5, 1), ("foxtrot", 0, 4, 2)]],
}
VAL_ERRORS = [{"source": "/videos/broken.mp4", "stage": "decode", "reason": "moov atom not found"}]


def _make_sample(key: str, label: int, f: int, p: int, rng: np.random.Generator):
    frame_indices = np.arange(f, dtype=np.int32) * STRIDE
    # Smooth frames (JPEG keeps them close), so a drawn skeleton stands out in `show`.
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 3, yy * 4, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    frames = np.repeat(base[None], f, axis=0)
    kp = np.zeros((f, p, LAYOUT.num_joints, 3), np.float32)
    if p:
        kp[..., 0] = rng.uniform(4, W - 5, kp.shape[:3])
        kp[..., 1] = rng.uniform(4, H - 5, kp.shape[:3])
        kp[..., 2] = rng.uniform(0.3, 1.0, kp.shape[:3])
    raster = render_clip(kp, LAYOUT.bones, (H // 4, W // 4), scale=0.25)
    heatmaps, pafs = quantize_raster(raster, LAYOUT.num_joints)
    meta = {
        "key": key,
        "label": label,
        "label_name": CLASSES[label],
        "source": f"/videos/{key}.mp4",
        "fps": 30.0,
        "source_frames": f * STRIDE + 1,
        "source_height": 96,
        "source_width": 128,
        "height": H,
        "width": W,
        "layout": LAYOUT.name,
        "frame_stride": STRIDE,
        "person_order": "track",
        "num_persons": p,
    }
    sample = Sample(key, frames, frame_indices, kp, heatmaps, pafs, meta)
    with_person = persons_per_frame(kp, 0.1) > 0
    row = {
        "key": key,
        "label": label,
        "label_name": CLASSES[label],
        "source": meta["source"],
        "num_frames": f,
        "source_frames": meta["source_frames"],
        "fps": 30.0,
        "height": H,
        "width": W,
        "person_fraction": float(with_person.mean()),
        "num_persons": p,
    }
    return sample, row


def make_dataset(root: Path) -> Path:
    """A complete shard format v1 dataset of PLAN under ``root``."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, shards in PLAN.items():
        rows = []
        for number, samples in enumerate(shards):
            with ShardSetWriter(str(root / split), number) as writer:
                for key, label, f, p in samples:
                    sample, row = _make_sample(key, label, f, p, rng)
                    row["bytes"] = writer.add(sample)
                    row["shard"] = number
                    rows.append(row)
                writer.commit()
        errors = [e | {"key": "", "split": split} for e in VAL_ERRORS] if split == "val" else []
        write_table(str(root / split / "index.parquet"), rows, INDEX_SCHEMA)
        write_table(str(root / split / "errors.parquet"), errors, ERRORS_SCHEMA)
        splits[split] = {
            "samples": len(rows),
            "shards": len(shards),
            "errors": len(errors),
            "frames": sum(r["num_frames"] for r in rows),
        }
    info = DatasetInfo(
        dataset="generic",
        classes=CLASSES,
        layout=LAYOUT.name,
        person_order="track",
        frame_stride=STRIDE,
        short_side=H,
        splits=splits,
        build={"pose": "precomputed"},
    )
    info.save(str(root))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tools") / "ds")


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    """A private copy of the dataset, to damage."""
    return Path(shutil.copytree(dataset, tmp_path / "ds"))


def invoke(command, *args: str) -> Result:
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


# ----------------------------------------------------------------------------------------------
# inspect


def test_inspect_json_counts(dataset):
    result = invoke(inspect_dataset, dataset, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    d = stats["dataset"]
    assert (d["dataset"], d["layout"], d["joints"], d["bones"]) == ("generic", "coco17", 17, 19)
    assert (d["classes"], d["frame_stride"], d["format_version"]) == (3, STRIDE, 1)
    assert d["person_order"] == "track"
    train, val = stats["splits"]["train"], stats["splits"]["val"]
    assert train["samples"] == 5 and val["samples"] == 2
    assert train["shards"] == {"rgb": 2, "pose": 2, "raster": 2}
    assert train["classes"] == {"drink": 2, "jump": 2, "wave": 1}
    assert val["classes"] == {"drink": 1, "jump": 0, "wave": 1}
    assert train["frames"] == 5 + 4 + 6 + 3 + 4
    assert train["pose"]["no_person"] == 1  # delta
    assert train["pose"]["persons_histogram"] == {"0": 1, "1": 2, "2": 2, "3": 0, "4": 0, "5": 0}
    assert train["pose"]["mean_person_fraction"] == pytest.approx(4 / 5)
    assert val["errors"] == {"total": 1, "by_stage": {"decode": 1}}
    assert train["errors"]["total"] == 0
    # Sizes come from the tar files themselves.
    rgb_bytes = sum(p.stat().st_size for p in (dataset / "train").glob("rgb-*.tar"))
    assert train["bytes"]["rgb"] == rgb_bytes
    assert train["bytes_per_video"]["rgb"] == pytest.approx(rgb_bytes / 5)
    assert stats["totals"]["samples"] == 7


def test_inspect_table_and_keys(dataset):
    result = invoke(inspect_dataset, dataset)
    assert result.exit_code == 0, result.output
    for text in ("coco17", "samples per class", "drink", "videos with no person", "decode 1"):
        assert text in result.stdout
    keys = invoke(inspect_dataset, dataset / "val", "--keys")  # a split folder as URL
    assert keys.stdout.splitlines() == ["val\techo\twave\t5", "val\tfoxtrot\tdrink\t4"]
    listed = invoke(inspect_dataset, dataset, "--keys", "--split", "train").stdout
    assert "train\t-dash_key\tjump\t4" in listed.splitlines()
    both = invoke(inspect_dataset, dataset, "--keys", "--json")
    assert both.exit_code == 2 and "--json and --keys: give one" in both.output


def test_inspect_refuses_what_is_not_a_dataset(tmp_path):
    result = invoke(inspect_dataset, tmp_path)
    assert result.exit_code == 1
    assert "not a built dataset" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------------------------
# verify


@pytest.mark.parametrize("deep", [False, True])
def test_verify_passes_on_a_good_dataset(dataset, deep):
    result = invoke(verify, dataset, "--deep" if deep else "--no-deep")
    assert result.exit_code == 0, result.output
    assert "OK: 2 split(s), 9 shards, 7 samples" in result.stdout


def _rewrite(path: Path, change: Callable[[list[tuple[str, dict[str, bytes]]]], list]) -> None:
    """Rewrite a tar with ``change`` applied to its (key, members) groups."""
    write_tar_groups(path, change(tar_groups(path)))


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def truncate_half(ds: Path) -> None:
    path = ds / "train" / "pose-000000.tar"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncate_at_member_boundary(ds: Path) -> None:
    # Cut right after the first sample's members: tarfile reads this as a shorter, valid tar.
    path = ds / "train" / "rgb-000001.tar"
    data = path.read_bytes()
    import tarfile

    with tarfile.open(path) as tar:
        first = tar.getmembers()[0]
        end = first.offset_data + -(-first.size // 512) * 512
    path.write_bytes(data[:end])


def garble_header(ds: Path) -> None:
    path = ds / "train" / "raster-000000.tar"
    import tarfile

    with tarfile.open(path) as tar:
        second = tar.getmembers()[1]
    data = bytearray(path.read_bytes())
    data[second.offset : second.offset + 8] = b"garbage!"
    path.write_bytes(bytes(data))


def drop_key_from_pose(ds: Path) -> None:
    _rewrite(ds / "train" / "pose-000000.tar", lambda g: [x for x in g if x[0] != "bravo"])


def swap_raster_order(ds: Path) -> None:
    _rewrite(ds / "train" / "raster-000000.tar", lambda g: [g[1], g[0], *g[2:]])


def keypoints_float64(ds: Path) -> None:
    def change(groups):
        for key, g in groups:
            if key == "alpha":
                g["keypoints.npy"] = _npy(load_npy(g["keypoints.npy"]).astype(np.float64))
        return groups

    _rewrite(ds / "train" / "pose-000000.tar", change)


def leftover_tmp(ds: Path) -> None:
    (ds / "val" / ".tmp-0123abcd-rgb-000001.tar").write_bytes(b"partial")


def index_row_without_sample(ds: Path) -> None:
    path = ds / "train" / "index.parquet"
    rows = pq.read_table(path).to_pylist()
    rows.append(rows[0] | {"key": "ghost"})
    write_table(str(path), rows, INDEX_SCHEMA)


def missing_raster_shard(ds: Path) -> None:
    (ds / "val" / "raster-000000.tar").unlink()


def frame_not_a_multiple_of_stride(ds: Path) -> None:
    def change(groups):
        for key, g in groups:
            if key == "echo":
                g["frames.npy"] = _npy(np.array([0, 2, 4, 7, 8], np.int32))
        return groups

    _rewrite(ds / "val" / "pose-000000.tar", change)


def label_mismatch(ds: Path) -> None:
    def change(groups):
        for key, g in groups:
            if key == "foxtrot":
                g["json"] = json.dumps(json.loads(g["json"]) | {"label": 1}).encode()
        return groups

    _rewrite(ds / "val" / "pose-000000.tar", change)


def raster_wrong_size(ds: Path) -> None:
    import io
    import zipfile

    def change(groups):
        key, g = groups[0]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("heatmaps.npy", _npy(np.zeros((5, 17, 24, 32), np.uint8)))
            zf.writestr("pafs.npy", _npy(np.zeros((5, 38, 24, 32), np.int8)))
        g["raster.npz"] = buf.getvalue()
        return groups

    _rewrite(ds / "train" / "raster-000000.tar", change)


def wrong_bones_in_dataset_json(ds: Path) -> None:
    data = json.loads((ds / "dataset.json").read_text())
    data["bones"] = data["bones"][::-1]
    (ds / "dataset.json").write_text(json.dumps(data))


CORRUPTIONS = [
    (truncate_half, "train/pose-000000.tar: truncated inside member"),
    (truncate_at_member_boundary, "train/rgb-000001.tar: truncated: no end-of-archive marker"),
    (garble_header, "train/raster-000000.tar: corrupt member header"),
    (drop_key_from_pose, "train/pose-000000.tar: bravo is in the index but has no sample here"),
    (swap_raster_order, "train/raster-000000.tar: samples not in the order of pose-000000.tar"),
    (keypoints_float64, "train/pose-000000.tar: alpha: keypoints dtype float64"),
    (leftover_tmp, "val/.tmp-0123abcd-rgb-000001.tar: leftover temporary file"),
    (index_row_without_sample, "train/pose-000000.tar: ghost is in the index but has no sample"),
    (missing_raster_shard, "val/raster-000000.tar: missing"),
    (frame_not_a_multiple_of_stride, "echo: frame indices not non-negative multiples of stride"),
    (label_mismatch, "val/pose-000000.tar: foxtrot: json label 1, index says 0"),
    (raster_wrong_size, "alpha: heatmaps shape [5, 17, 24, 32], expected [5, 17, 12, 16]"),
    (wrong_bones_in_dataset_json, "dataset.json: bones differ from layout coco17"),
]


@pytest.mark.parametrize("damage,message", CORRUPTIONS, ids=[c[0].__name__ for c in CORRUPTIONS])
def test_verify_names_each_problem(copy, damage, message):
    damage(copy)
    result = invoke(verify, copy, "--quiet")
    assert result.exit_code == 1, result.output
    assert message in result.stdout, result.stdout
    problems = [line for line in result.stdout.splitlines() if not line.startswith("FAILED")]
    assert f"FAILED: {len(problems)} problem(s)" in result.stdout


def test_shallow_verify_decodes_only_first_frames_deep_decodes_all(copy):
    def change(groups):
        key, g = groups[0]
        last = sorted(g)[-1]
        g[last] = b"\xff\xd8 not a jpeg"
        return groups

    _rewrite(copy / "train" / "rgb-000000.tar", change)
    assert invoke(verify, copy, "--quiet").exit_code == 0
    deep = invoke(verify, copy, "--quiet", "--deep")
    assert deep.exit_code == 1
    assert "train/rgb-000000.tar: alpha: frame 000008 does not decode" in deep.stdout


def test_verify_one_split_and_unknown_split(copy):
    truncate_half(copy)  # damage in train only
    assert invoke(verify, copy, "--split", "val", "--quiet").exit_code == 0
    assert invoke(verify, copy / "val", "--quiet").exit_code == 0  # the split folder as URL
    unknown = invoke(verify, copy, "--split", "test")
    assert unknown.exit_code == 1
    assert "no split 'test'" in unknown.output and "(splits: train, val)" in unknown.output


# ----------------------------------------------------------------------------------------------
# show


def test_show_writes_the_grid(dataset, tmp_path):
    out = tmp_path / "alpha.png"
    result = invoke(show, dataset, "alpha", "-o", out, "--frames", "3")
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out).convert("RGB"))
    # A title strip (the key and class, wider than one tile) above the two rows of tiles.
    band = image.shape[0] - 2 * H
    assert image.shape[1:] == (3 * W, 3) and 8 <= band < H
    title = image[:band].max(axis=-1)
    assert (title > 200).any() and (title[:, 3 * W - 2 :] < 50).all()  # drawn, and fits
    image = image[band:]
    groups = dict(tar_groups(dataset / "train" / "rgb-000000.tar"))
    import simplejpeg

    frame = simplejpeg.decode_jpeg(groups["alpha"]["000000.jpg"], colorspace="RGB")
    # Below the caption, the skeleton tile differs from the plain frame (bones drawn), and the
    # raster tile is the darkened frame with the rasters on it.
    top, bottom = image[16:H, :W].astype(int), image[H + 16 :, :W].astype(int)
    assert (np.abs(top - frame[16:]).max(axis=-1) > 60).mean() > 0.02
    assert (np.abs(bottom - frame[16:] * 0.35).max(axis=-1) > 60).mean() > 0.01
    # Bones: the middle of each bone of a confident person has that person's colour.
    kp = _pose_samples(dataset / "train")["alpha"][0][0]
    hits = total = 0
    for person, colour in zip(kp, PERSON_COLOURS, strict=False):
        for a, b in LAYOUT.bones:
            x, y = np.rint((person[a, :2] + person[b, :2]) / 2).astype(int)
            if y < 16 or min(person[a, 2], person[b, 2]) < 0.1:
                continue  # under the caption, or a bone that is not drawn
            patch = image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(int)
            hits += bool((np.abs(patch - colour).max(axis=1) < 60).any())
            total += 1
    assert total > 10 and hits / total > 0.6
    assert "frames 0, 4, 8" in result.stdout


def test_show_writes_the_format_its_file_name_says(dataset, tmp_path):
    out = tmp_path / "alpha.JPG"
    assert invoke(show, dataset, "alpha", "-o", out).exit_code == 0
    assert Image.open(out).format == "JPEG"
    width, height = Image.open(out).size
    assert width == 4 * W and 2 * H < height < 3 * H
    result = invoke(show, dataset, "alpha", "-o", tmp_path / "alpha.gif")
    assert result.exit_code == 2 and "name a .png or .jpg file" in result.output
    assert not (tmp_path / "alpha.gif").exists()


def test_show_on_a_copy_without_rgb_shards_says_they_are_missing(copy, tmp_path):
    for tar in (copy / "train").glob("rgb-*.tar"):
        tar.unlink()
    result = invoke(show, copy, "alpha", "-o", tmp_path / "a.png")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "no rgb shard rgb-000000.tar" in lines[0] and "corrupt" not in lines[0]


def test_show_more_frames_than_kept_uses_all(dataset, tmp_path):
    out = tmp_path / "charlie.png"
    assert invoke(show, dataset, "charlie", "-o", out, "--frames", "10").exit_code == 0
    assert Image.open(out).size[0] == 3 * W  # charlie keeps 3 frames


@pytest.mark.parametrize(
    "args", [["-o", "{out}", "--", "-dash_key"], ["--key", "-dash_key", "-o", "{out}"]]
)
def test_show_key_beginning_with_dash(dataset, tmp_path, args):
    out = tmp_path / "dash.png"
    result = invoke(show, dataset, *[a.format(out=out) for a in args])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] == 4 * W


def test_show_hints_at_dash_keys_given_as_options(dataset, tmp_path):
    result = invoke(show, dataset, "-dash_key", "-o", tmp_path / "x.png")
    assert result.exit_code == 2
    assert "No such option" in result.output and "-- -KEY" in result.output


def test_show_refuses_an_unknown_key(dataset, tmp_path):
    result = invoke(show, dataset, "alpah", "-o", tmp_path / "x.png")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "no sample 'alpah'" in lines[0] and "alpha" in lines[0]
    assert f"pipeline inspect {dataset} --keys" in lines[0]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", ["show", "export"])
def test_an_output_that_cannot_be_a_file_is_one_line(dataset, tmp_path, command):
    (tmp_path / "a_file").write_text("mine")
    args = {
        "show": (show, dataset, "alpha", "-o"),
        "export": (export, dataset, "--format", "mmaction", "-o"),
    }[command]
    for out, expected in ((tmp_path / "a_file" / "x.out", "cannot create its folder"),
                          (tmp_path, "is a folder")):  # fmt: skip
        result = invoke(*args, out)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert expected in lines[0] and "Traceback" not in result.output
    assert (tmp_path / "a_file").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# export


def _pose_samples(split_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    out = {}
    for tar in sorted(split_dir.glob("pose-*.tar")):
        out |= {k: decode_pose(g) for k, g in tar_groups(tar)}
    return out


def _check_export(pkl: Path, ds: Path, splits: tuple[str, ...]) -> None:
    with open(pkl, "rb") as f:
        doc = pickle.load(f)
    expected_split = {
        s: pq.read_table(ds / s / "index.parquet").column("key").to_pylist() for s in splits
    }
    assert doc["split"] == expected_split
    by_key = {a["frame_dir"]: a for a in doc["annotations"]}
    assert len(by_key) == sum(len(v) for v in expected_split.values())
    for split in splits:
        index = {r["key"]: r for r in pq.read_table(ds / split / "index.parquet").to_pylist()}
        for key, (kp, frames, meta) in _pose_samples(ds / split).items():
            ann = by_key[key]
            f, p = kp.shape[:2]
            assert ann["label"] == index[key]["label"] == meta["label"]
            assert ann["img_shape"] == (H, W) and ann["original_shape"] == (96, 128)
            assert ann["total_frames"] == f
            np.testing.assert_array_equal(ann["source_frame_inds"], frames)
            assert ann["keypoint"].dtype == np.float32 and ann["keypoint_score"].dtype == np.float32
            if p == 0:  # no person anywhere: one all-zero person
                assert ann["keypoint"].shape == (1, f, 17, 2)
                assert not ann["keypoint"].any() and not ann["keypoint_score"].any()
                continue
            np.testing.assert_array_equal(ann["keypoint"], kp[..., :2].transpose(1, 0, 2, 3))
            np.testing.assert_array_equal(ann["keypoint_score"], kp[..., 2].transpose(1, 0, 2))


def test_export_round_trips(dataset, tmp_path):
    out = tmp_path / "poses.pkl"
    result = invoke(export, dataset, "--format", "mmaction", "-o", out)
    assert result.exit_code == 0, result.output
    assert "7 samples (train 5, val 2)" in result.stdout
    _check_export(out, dataset, ("train", "val"))
    # The project's own pyskl reader loads it too.
    from pipeline.formats import read_mmaction_pickle

    read = read_mmaction_pickle(out)
    assert read["echo"][1]["splits"] == ["val"]


def test_export_reads_only_pose_shards(copy, tmp_path, monkeypatch):
    for path in [*copy.rglob("rgb-*.tar"), *copy.rglob("raster-*.tar")]:
        path.unlink()
    opened: list[str] = []
    # Every tar the reader hands to webdataset passes through local_or_cached.
    real_open = reader.local_or_cached
    monkeypatch.setattr(
        reader, "local_or_cached", lambda url, *a: opened.append(str(url)) or real_open(url, *a)
    )
    out = tmp_path / "val.pkl"
    result = invoke(export, copy, "--format", "mmaction", "-o", out, "--split", "val")
    assert result.exit_code == 0, result.output
    _check_export(out, copy, ("val",))
    tars = [Path(u).name for u in opened if u.endswith(".tar")]
    assert tars == ["pose-000000.tar"]


# ----------------------------------------------------------------------------------------------
# S3


def test_tools_on_s3(dataset, copy, tmp_path):
    truncate_half(copy)
    with s3_server():
        fs = s3fs_client()
        fs.put(str(dataset) + "/", "data/good/", recursive=True)
        fs.put(str(copy) + "/", "data/bad/", recursive=True)

        local = json.loads(invoke(inspect_dataset, dataset, "--json").stdout)
        remote = json.loads(invoke(inspect_dataset, "s3://data/good", "--json").stdout)
        assert remote["dataset"]["root"] == "s3://data/good"
        local["dataset"].pop("root")
        remote["dataset"].pop("root")
        assert remote == local  # same counts and the same tar sizes

        good = invoke(verify, "s3://data/good", "--deep")
        assert good.exit_code == 0, good.output
        bad = invoke(verify, "s3://data/bad", "--quiet")
        assert bad.exit_code == 1
        assert "train/pose-000000.tar: truncated inside member" in bad.stdout

        pkl = tmp_path / "s3.pkl"
        assert invoke(export, "s3://data/good", "--format", "mmaction", "-o", pkl).exit_code == 0
        _check_export(pkl, dataset, ("train", "val"))
        png = invoke(show, "s3://data/good/val", "echo", "-o", "s3://data/echo.png")
        assert png.exit_code == 0, png.output
        assert fs.cat("data/echo.png")[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# A real build


def test_tools_on_a_real_mediapipe_build(tmp_path):
    # One real video through the real CLI; stride 8 keeps mediapipe's share of the time small.
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,split\narm_wrestling.mp4,arm wrestling,train\n")
    out = tmp_path / "out"
    run_cli(
        "pipeline", "build", "--dataset", "generic", "--videos", REAL, "--annotations", csv_path,
        "--pose", "mediapipe", "--limit", "1", "--samples-per-shard", "1", "--num-workers", "1",
        "--frame-stride", "8", "--out", out, "--quiet",
    )  # fmt: skip
    proc = run_cli("pipeline", "verify", out, "--deep")
    assert "OK: 1 split(s), 3 shards, 1 samples" in proc.stdout
    stats = json.loads(invoke(inspect_dataset, out, "--json").stdout)
    assert stats["splits"]["train"]["samples"] == 1
    assert stats["splits"]["train"]["pose"]["mean_person_fraction"] > 0.5
    assert invoke(show, out, "arm_wrestling", "-o", tmp_path / "aw.png").exit_code == 0
    width, height = Image.open(tmp_path / "aw.png").size
    # Four 340x256 frames over their rasters, under a title strip a few text lines high.
    assert width == 4 * 340 and 2 * 256 < height <= 2 * 256 + 40
    pkl = tmp_path / "aw.pkl"
    assert invoke(export, out, "--format", "mmaction", "-o", pkl).exit_code == 0
    with open(pkl, "rb") as f:
        ann = pickle.load(f)["annotations"][0]
    assert ann["frame_dir"] == "arm_wrestling" and ann["total_frames"] == 35
    np.testing.assert_array_equal(ann["source_frame_inds"], np.arange(35) * 8)
