"""`pipeline synth`: layouts, independent parsing, decoding, ground truth on the figure,
determinism, context, hidden persons and the command line.

The pose files are parsed here with the json module and plain text parsing, not with
pipeline.formats, so that a bug shared by the writer and the reader cannot hide.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import decord
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.synth import class_table, make_dataset, plan_dataset, render_video
from pipeline.synth.cli import synth

KIN = dict(num_classes=4, videos_per_class=4, frames=12, width=96, height=72, seed=3)
NTU = dict(num_classes=3, videos_per_class=6, frames=10, width=128, height=72, seed=1)


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kinetics")
    make_dataset(out, "kinetics", persons=2, hidden_fraction=0.25, **KIN)
    return out


@pytest.fixture(scope="module")
def mimetics(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mimetics")
    make_dataset(out, "mimetics", persons=1, **KIN)
    return out


@pytest.fixture(scope="module")
def ntu(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ntu")
    make_dataset(out, "ntu", persons=2, hidden_fraction=0.2, **NTU)
    return out


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "annotations.csv", newline="") as f:
        return list(csv.DictReader(f))


def _meta(root: Path) -> dict:
    return json.loads((root / "synth.json").read_text())


def _decode(path: Path) -> np.ndarray:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def _kinetics_json(path: Path, width: int, height: int) -> tuple[list[int], list[np.ndarray]]:
    """Independent reader: frame indices and, per frame, [persons, 18, 3] in pixels."""
    doc = json.loads(path.read_text())
    indices, frames = [], []
    for entry in doc["data"]:
        indices.append(entry["frame_index"])
        people = []
        for person in entry["skeleton"]:
            pose, score = person["pose"], person["score"]
            assert len(pose) == 36 and len(score) == 18
            xy = np.array(pose, dtype=np.float64).reshape(18, 2) * (width, height)
            people.append(np.concatenate([xy, np.array(score)[:, None]], axis=1))
        frames.append(np.array(people).reshape(-1, 18, 3))
    return indices, frames


def _ntu_text(path: Path) -> list[list[tuple[int, np.ndarray]]]:
    """Independent reader: per frame, (bodyID, joints [25, 12]) for each body."""
    tokens = path.read_text().split("\n")
    pos = 0

    def line() -> list[str]:
        nonlocal pos
        pos += 1
        return tokens[pos - 1].split()

    frames = []
    for _ in range(int(line()[0])):
        bodies = []
        for _ in range(int(line()[0])):
            head = line()
            assert len(head) == 10
            assert int(line()[0]) == 25
            joints = np.array([[float(v) for v in line()] for _ in range(25)])
            assert joints.shape == (25, 12)
            bodies.append((int(head[0]), joints))
        frames.append(bodies)
    assert all(not t.strip() for t in tokens[pos:])
    return frames


# ------------------------------------------------------------------ kinetics / mimetics layout


def test_kinetics_layout_and_annotations(kinetics):
    header = (kinetics / "annotations.csv").read_text().splitlines()[0]
    assert header == "label,youtube_id,time_start,time_end,split"
    rows = _rows(kinetics)
    classes = (kinetics / "classes.txt").read_text().splitlines()
    assert len(classes) == 4 and len(set(classes)) == 4
    assert len(rows) == 16 and {r["split"] for r in rows} == {"train", "val"}
    for name in classes:
        splits = [r["split"] for r in rows if r["label"] == name]
        assert splits.count("val") == 1 and splits.count("train") == 3
    ids = [r["youtube_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{11}", i) for i in ids)
    assert any(i.startswith("-") for i in ids) and any("_" in i for i in ids)
    stems = {f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}" for r in rows}
    assert {p.stem for p in (kinetics / "videos").iterdir()} == stems
    assert {p.name for p in (kinetics / "skeletons").iterdir()} == {s + ".json" for s in stems}
    for r in rows:
        stem = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
        doc = json.loads((kinetics / "skeletons" / f"{stem}.json").read_text())
        assert doc["label"] == r["label"] and classes[doc["label_index"]] == r["label"]
        assert [e["frame_index"] for e in doc["data"]] == list(range(1, 13))
        for entry in doc["data"]:
            for person in entry["skeleton"]:
                assert all(0.0 <= v <= 1.0 for v in person["pose"])
                assert all(0.0 <= s <= 1.0 for s in person["score"])


def test_mimetics_is_test_only_and_same_classes(mimetics, kinetics):
    rows = _rows(mimetics)
    assert {r["split"] for r in rows} == {"test"} and len(rows) == 16
    assert (mimetics / "classes.txt").read_text() == (kinetics / "classes.txt").read_text()
    assert not {r["youtube_id"] for r in rows} & {r["youtube_id"] for r in _rows(kinetics)}


def test_videos_decode_with_decord(kinetics, mimetics):
    for root in (kinetics, mimetics):
        for path in sorted((root / "videos").glob("*.mp4"))[:6]:
            vr = decord.VideoReader(str(path))
            assert len(vr) == 12
            assert vr[0].shape == (72, 96, 3)
            assert abs(vr.get_avg_fps() - 30.0) < 0.01


# ------------------------------------------------------------------ ground truth on the figure


def test_rendered_joints_lie_on_the_figure():
    _, _, planned = plan_dataset("kinetics", persons=3, hidden_fraction=0.25, **KIN)
    checked_multi = False
    for item in planned:
        r = render_video(item.spec)
        t, p = r.visible.shape[:2]
        assert r.points.shape == (t, p, 30, 2)
        ui = np.floor(r.points[..., 0] + 0.5).astype(int)
        vi = np.floor(r.points[..., 1] + 0.5).astype(int)
        tt = np.broadcast_to(np.arange(t)[:, None, None], ui.shape)
        vis = r.visible
        # The drawing changed every visible joint's pixel: something was drawn there.
        diff = np.abs(
            r.frames[tt[vis], vi[vis], ui[vis]].astype(int) - r.background[vi[vis], ui[vis]]
        ).sum(axis=-1)
        assert np.all(diff > 40)
        if item.spec.hidden is None and item.spec.persons == 1:
            # A person in plain view: every joint is inside the frame and on its own figure.
            assert vis.all()
        if item.spec.persons > 1:
            checked_multi = True
            assert vis.mean() > 0.8
    assert checked_multi


def test_file_keypoints_match_drawing_and_video(kinetics):
    meta = _meta(kinetics)
    _, _, planned = plan_dataset("kinetics", persons=2, hidden_fraction=0.25, **KIN)
    for item, record in zip(planned, meta["videos"], strict=True):
        assert record["key"] == item.stem
        if item.spec.hidden == "occluded":
            continue
        r = render_video(item.spec)
        indices, frames = _kinetics_json(kinetics / item.skeleton, 96, 72)
        assert indices == list(range(1, 13))
        truth = r.openpose18()
        video = _decode(kinetics / item.video)
        hits, total = 0, 0
        for t, people in enumerate(frames):
            visible_people = [q for q in range(truth.shape[1]) if (truth[t, q, :, 2] > 0).any()]
            assert len(people) == len(visible_people)
            for person, q in zip(people, visible_people, strict=True):
                seen = person[:, 2] > 0
                np.testing.assert_array_equal(seen, truth[t, q, :, 2] > 0)
                # Exact: the file's normalised coordinates map back to the drawn points.
                np.testing.assert_array_equal(
                    person[seen, :2].astype(np.float32), truth[t, q, seen, :2]
                )
                for x, y in person[seen, :2]:
                    u, v = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                    diff = np.abs(video[t, v, u].astype(int) - r.background[v, u]).sum()
                    hits += diff > 40
                    total += 1
        if item.spec.hidden is None:
            assert total > 0
        if total:
            assert hits / total > 0.9, (item.stem, hits, total)


# ------------------------------------------------------------------ determinism


def test_same_seed_same_output_other_seed_differs(tmp_path):
    opts = dict(num_classes=2, videos_per_class=2, frames=8, width=64, height=48, persons=2)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_dataset(a, "kinetics", seed=11, hidden_fraction=0.5, **opts)
    make_dataset(b, "kinetics", seed=11, hidden_fraction=0.5, **opts)
    make_dataset(c, "kinetics", seed=12, hidden_fraction=0.5, **opts)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".mp4":
            np.testing.assert_array_equal(_decode(a / rel), _decode(b / rel))
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "annotations.csv").read_bytes() != (c / "annotations.csv").read_bytes()
    skel_a = sorted(p.read_bytes() for p in (a / "skeletons").iterdir())
    skel_c = sorted(p.read_bytes() for p in (c / "skeletons").iterdir())
    assert skel_a != skel_c


# ------------------------------------------------------------------ context


def _background_feature(video: Path) -> np.ndarray:
    frame = decord.VideoReader(str(video))[0].asnumpy().astype(np.float64)
    return frame[: frame.shape[0] // 4].reshape(-1, 3).mean(axis=0)  # the wall, above people


def test_in_context_background_identifies_class_out_of_context_does_not(kinetics, mimetics):
    kin_meta, mim_meta = _meta(kinetics), _meta(mimetics)
    kin = [(v["label_index"], _background_feature(kinetics / v["video"]))
           for v in kin_meta["videos"] if v["hidden"] is None]  # fmt: skip
    labels = np.array([k for k, _ in kin])
    feats = np.array([f for _, f in kin])
    # In context: leave-one-out nearest class mean of the wall colour finds the class.
    correct = 0
    for i in range(len(kin)):
        others = np.arange(len(kin)) != i
        means = {c: feats[others & (labels == c)].mean(axis=0) for c in set(labels[others])}
        guess = min(means, key=lambda c: np.linalg.norm(means[c] - feats[i]))
        correct += guess == labels[i]
    assert correct == len(kin)

    # Out of context: the same class means now predict the scene drawn, not the class.
    means = {c: feats[labels == c].mean(axis=0) for c in set(labels)}
    by_label = by_context = 0
    videos = mim_meta["videos"]
    for v in videos:
        f = _background_feature(mimetics / v["video"])
        guess = min(means, key=lambda c: np.linalg.norm(means[c] - f))
        by_label += guess == v["label_index"]
        by_context += guess == v["context"]  # with one scene per class, context k is class k's
    assert by_context == len(videos)
    assert by_label / len(videos) < 0.5
    assert sum(v["context"] != v["label_index"] for v in videos) >= len(videos) // 2


def test_context_pairs_and_shared_context():
    classes, num_contexts = class_table(6, context_pairs=2, shared_context=2)
    motions = [c.motion for c in classes]
    contexts = [c.context for c in classes]
    assert motions[0] == motions[1] and contexts[0] != contexts[1]  # scene only
    assert motions[2] == motions[3] and contexts[2] != contexts[3]
    assert motions[4] != motions[5] and contexts[4] == contexts[5]  # motion only
    assert len(set(motions)) == 4 and num_contexts == 5
    assert len({c.name for c in classes}) == 6
    # The table does not depend on the seed or on in/out context.
    _, _, p1 = plan_dataset("kinetics", num_classes=6, context_pairs=2, shared_context=2, seed=1)
    _, _, p2 = plan_dataset("mimetics", num_classes=6, context_pairs=2, shared_context=2, seed=9)
    assert {(i.label, i.spec.motion) for i in p1} == {(i.label, i.spec.motion) for i in p2}
    assert all(i.spec.context == contexts[i.label] for i in p1)
    # Paired classes look different in context: their walls differ.
    first = {i.label: render_video(i.spec).background for i in p1 if i.label in (0, 1)}
    assert np.abs(first[0].astype(int) - first[1].astype(int)).mean() > 20


# ------------------------------------------------------------------ hidden persons


def test_hidden_videos_give_empty_or_low_score_poses(kinetics):
    meta = _meta(kinetics)
    hidden = [v for v in meta["videos"] if v["hidden"]]
    assert len(hidden) == 4
    assert sorted(v["label_index"] for v in hidden) == [0, 1, 2, 3]  # spread over classes
    for v in meta["videos"]:
        _, frames = _kinetics_json(kinetics / v["skeleton"], 96, 72)
        seen = np.array([(f[:, :, 2] > 0).sum() for f in frames]) if frames else np.zeros(0)
        if v["hidden"] == "occluded":
            assert all(len(f) == 0 for f in frames)  # "skeleton": [] throughout
        elif v["hidden"] == "cutoff":
            assert seen.sum() <= 0.3 * 18 * len(frames)
        elif v["persons"] == 1:
            assert all(len(f) == 1 and np.all(f[0, :, 2] > 0) for f in frames)


# ------------------------------------------------------------------ NTU


XSUB60_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
XSUB120_TRAIN = XSUB60_TRAIN | {
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
    89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
}  # fmt: skip


def test_ntu_layout_protocols_and_skeletons(ntu):
    names = sorted(p.name for p in (ntu / "videos").iterdir())
    assert len(names) == 18
    assert all(re.fullmatch(r"S\d{3}C\d{3}P\d{3}R\d{3}A\d{3}_rgb\.avi", n) for n in names)
    stems = [n[:20] for n in names]
    assert sorted(p.name for p in (ntu / "skeletons").iterdir()) == [s + ".skeleton" for s in stems]
    fields = [tuple(int(x) for x in re.findall(r"\d{3}", s)) for s in stems]
    assert {f[4] for f in fields} == {1, 2, 3}
    classes = (ntu / "classes.txt").read_text().splitlines()
    assert classes == ["drink water", "eat meal/snack", "brushing teeth"]
    protocols = {
        "ntu60 xsub": [f[2] in XSUB60_TRAIN for f in fields],
        "ntu60 xview": [f[1] in (2, 3) for f in fields],
        "ntu120 xsub": [f[2] in XSUB120_TRAIN for f in fields],
        "ntu120 xset": [f[0] % 2 == 0 for f in fields],
    }
    for name, train in protocols.items():
        assert any(train) and not all(train), name

    states, two_person, empty_frames = [], 0, 0
    for stem in stems:
        frames = _ntu_text(ntu / "skeletons" / f"{stem}.skeleton")
        video = _decode(ntu / "videos" / f"{stem}_rgb.avi")
        assert video.shape == (10, 72, 128, 3) and len(frames) == 10
        ids = {body_id for bodies in frames for body_id, _ in bodies}
        two_person += len(ids) == 2
        empty_frames += sum(len(bodies) == 0 for bodies in frames)
        for t, bodies in enumerate(frames):
            for _, joints in bodies:
                state = joints[:, 11].astype(int)
                states += state.tolist()
                tracked = state > 0
                # colorX/colorY are pixels of NTU's 1920x1080 colour frame; map them to ours.
                u = (joints[tracked, 5] + 0.5) * 128 / 1920 - 0.5
                v = (joints[tracked, 6] + 0.5) * 72 / 1080 - 0.5
                assert np.all((u > -0.5) & (u < 127.5) & (v > -0.5) & (v < 71.5))
                assert np.all(joints[:, 2] > 1.0)  # depth in metres, in front of the camera
                # The tracked joints are on a figure: their pixels are dark (figures are dark,
                # scenes light).
                pix = video[t, np.floor(v + 0.5).astype(int), np.floor(u + 0.5).astype(int)]
                assert np.mean(pix.max(axis=1) < 150) > 0.9
    states = np.array(states)
    assert np.mean(states == 2) > 0.8 and (states == 1).any()
    assert two_person >= 2
    assert empty_frames >= 10  # the occluded videos: no body tracked at all


# ------------------------------------------------------------------ command line


def test_cli_writes_dataset_and_refuses_bad_input(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    args = ["--dataset", "kinetics", "--out", str(out), "--num-classes", "2",
            "--videos-per-class", "2", "--frames", "6", "--size", "64x48", "--seed", "5"]  # fmt: skip
    result = runner.invoke(synth, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("synth: wrote 4 kinetics videos")
    assert len(list((out / "videos").iterdir())) == 4

    again = runner.invoke(synth, args)
    assert again.exit_code == 2 and "not empty" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output

    (out / "videos" / "stale.mp4").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(synth, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "videos" / "stale.mp4").exists() and (out / "notes.txt").exists()

    bad = [
        (["--size", "64by48"], "WIDTHxHEIGHT"),
        (["--size", "64x48", "--width", "64"], "either --size"),
        (["--width", "65", "--height", "48"], "even"),
        (["--width", "8"], "32<=x<=4096"),
        (["--hidden-fraction", "1.5"], "hidden-fraction"),
        (["--num-classes", "4", "--context-pairs", "3"], "context-pairs"),
        (["--shared-context", "1"], "shared-context"),
    ]
    for extra, expected in bad:
        result = runner.invoke(synth, ["--dataset", "ntu", "--out", str(tmp_path / "x")] + extra)
        assert result.exit_code == 2, (extra, result.output)
        assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
    assert runner.invoke(synth, ["--help"]).exit_code == 0

    # An --out that cannot be made (under a file): one line, exit 1; --debug keeps the cause.
    (tmp_path / "file").write_text("")
    under_file = [*args[:3], str(tmp_path / "file" / "x"), *args[4:]]
    result = runner.invoke(synth, under_file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(f"Error: cannot write {tmp_path}")
    result = runner.invoke(synth, [*under_file, "--debug"])
    assert result.exit_code == 1 and isinstance(result.exception.__cause__, NotADirectoryError)
