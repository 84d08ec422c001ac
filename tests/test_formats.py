"""Precomputed pose file readers and writers: round trips, empty frames, malformed files."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats import (
    NtuBody,
    PoseFileError,
    bodies_from_keypoints,
    parse_ntu_name,
    read_kinetics_skeleton,
    read_mmaction_pickle,
    read_ntu_skeleton,
    write_kinetics_skeleton,
    write_mmaction_pickle,
    write_ntu_skeleton,
)

# ---------------------------------------------------------------- kinetics-skeleton JSON


def _canonical_kinetics(kp: np.ndarray) -> np.ndarray:
    """What a kinetics-skeleton file can hold: absent joints are zeros, absent persons dropped."""
    out = np.zeros_like(kp)
    for t in range(kp.shape[0]):
        slot = 0
        for person in kp[t]:
            if (person[:, 2] > 0).any():
                out[t, slot] = np.where(person[:, 2:3] > 0, person, 0)
                slot += 1
    width = max((int((out[t, :, :, 2] > 0).any(axis=1).sum()) for t in range(len(out))), default=0)
    return out[:, :width]


def test_kinetics_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    kp = np.zeros((5, 2, 18, 3), dtype=np.float32)
    kp[..., 0] = rng.uniform(-3, 340, kp.shape[:3])
    kp[..., 1] = rng.uniform(0, 256, kp.shape[:3])
    kp[..., 2] = rng.uniform(0.05, 1, kp.shape[:3])
    kp[1, 0, 3, 2] = 0  # one joint not found
    kp[2] = 0  # a frame without persons
    kp[3, 0] = 0  # the first person missing: the second moves up, as in the file
    path = tmp_path / "v.json"
    write_kinetics_skeleton(path, kp, 340, 256, label="abseiling", label_index=0)
    frame_index, got, label = read_kinetics_skeleton(path, 340, 256)
    np.testing.assert_array_equal(frame_index, [1, 2, 3, 4, 5])
    assert label == "abseiling"
    assert got.dtype == np.float32 and got.shape == (5, 2, 18, 3)
    np.testing.assert_array_equal(got, _canonical_kinetics(kp))
    assert np.all(got[2] == 0)  # the empty frame gives zero scores
    doc = json.loads(path.read_text())
    assert doc["data"][2]["skeleton"] == [] and doc["label_index"] == 0
    assert doc["data"][1]["skeleton"][0]["pose"][6:8] == [0, 0]


@settings(max_examples=40, deadline=None)
@given(
    frames=st.integers(0, 4),
    persons=st.integers(0, 3),
    width=st.integers(1, 4000),
    height=st.integers(1, 4000),
    seed=st.integers(0, 2**32 - 1),
)
def test_kinetics_round_trip_property(frames, persons, width, height, seed):
    rng = np.random.default_rng(seed)
    kp = np.zeros((frames, persons, 18, 3), dtype=np.float32)
    kp[..., 0] = rng.uniform(-0.5, width, kp.shape[:3])
    kp[..., 1] = rng.uniform(-0.5, height, kp.shape[:3])
    kp[..., 2] = np.where(rng.random(kp.shape[:3]) < 0.3, 0, rng.random(kp.shape[:3]))
    buf = io.BytesIO()
    write_kinetics_skeleton(buf, kp, width, height, frame_index=np.arange(frames) + 7)
    got = read_kinetics_skeleton(io.BytesIO(buf.getvalue()), width, height)
    np.testing.assert_array_equal(got.frame_index, np.arange(frames) + 7)
    np.testing.assert_array_equal(got.keypoints, _canonical_kinetics(kp))
    assert got.label is None


def test_kinetics_reads_text_file_objects_and_st_gcn_style():
    doc = {
        "data": [
            {"frame_index": 1, "skeleton": []},
            {
                "frame_index": 2,
                "skeleton": [{"pose": [0.5, 0.25] * 18, "score": [0.9] * 18}] * 3,
            },
        ],
        "label": "x",
        "label_index": 3,
    }
    got = read_kinetics_skeleton(io.StringIO(json.dumps(doc)), 340, 256)
    assert got.keypoints.shape == (2, 3, 18, 3)
    assert np.all(got.keypoints[0] == 0)
    np.testing.assert_allclose(got.keypoints[1, :, :, 0], 170.0)
    np.testing.assert_allclose(got.keypoints[1, :, :, 1], 64.0)
    np.testing.assert_allclose(got.keypoints[1, :, :, 2], 0.9, rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"data": [\n{"frame_index": 1,\n "skeleton": [}\n]}', "line 3"),
        ('{"label": "x"}', "missing key 'data'"),
        ('{"data": [{"skeleton": []}]}', "missing key 'frame_index'"),
        ('{"data": [{"frame_index": 1}]}', "missing key 'skeleton'"),
        ('{"data": [{"frame_index": 0, "skeleton": []}]}', "frame_index"),
        ('{"data": [{"frame_index": 1, "skeleton": [{"pose": [1, 2], "score": []}]}]}', "36"),
        ('{"data": [{"frame_index": 1, "skeleton": [{"pose": [0.1]}]}]}', "'score'"),
        ("[1, 2]", "JSON object"),
        ('{"data": {"frame_index": 1}}', "'data' must be a list"),
    ],
)
def test_kinetics_malformed_files_name_file(tmp_path, text, expected):
    path = tmp_path / "bad_video.json"
    path.write_text(text)
    with pytest.raises(PoseFileError) as info:
        read_kinetics_skeleton(path, 340, 256)
    message = str(info.value)
    assert str(path) in message and expected in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_kinetics_error_names_file_object():
    f = io.BytesIO(b'{"data": [')
    f.name = "s3://bucket/skeletons/abc.json"
    with pytest.raises(
        PoseFileError, match=r"s3://bucket/skeletons/abc.json: invalid JSON at line 1"
    ):
        read_kinetics_skeleton(f, 340, 256)


def test_readers_take_fsspec_urls_and_file_objects():
    import fsspec  # an install requirement: the build reads through it

    kp = np.zeros((2, 1, 18, 3), dtype=np.float32)
    kp[1, 0] = (12.5, 7.25, 0.5)
    write_kinetics_skeleton("memory://poses/a.json", kp, 64, 48)
    np.testing.assert_array_equal(read_kinetics_skeleton("memory://poses/a.json", 64, 48)[1], kp)
    fsspec.filesystem("memory").pipe("/poses/bad.json", b'{"data": [\n{"frame_index": 1,')
    with fsspec.open("memory://poses/bad.json", "rb") as f:
        with pytest.raises(PoseFileError, match=r"/poses/bad.json: invalid JSON at line 2"):
            read_kinetics_skeleton(f, 64, 48)


# ---------------------------------------------------------------- NTU .skeleton


def _body(rng: np.random.Generator, body_id: int, tracking: np.ndarray) -> NtuBody:
    joints = rng.uniform(-2, 2000, (25, 11)).astype(np.float32)
    return NtuBody(body_id, joints, tracking, clipped_edges=2, lean=(0.25, -0.125))


def test_ntu_round_trip_tracks_bodies(tmp_path):
    rng = np.random.default_rng(1)
    a, b = 72057594037931101, 72057594037931250
    full = np.full(25, 2)
    mixed = rng.integers(0, 3, 25)
    frames = [
        [_body(rng, a, full)],
        [],  # a frame without bodies
        [_body(rng, b, mixed), _body(rng, a, full)],  # b listed first: the person axis is a track
        [_body(rng, b, full)],
    ]
    path = tmp_path / "S001C002P003R002A013.skeleton"
    write_ntu_skeleton(path, frames)
    got = read_ntu_skeleton(path)
    assert got.frames == 4 and got.body_ids == [a, b]
    assert got.keypoints.shape == (4, 2, 25, 3) and got.keypoints.dtype == np.float32
    np.testing.assert_array_equal(got.keypoints[0, 0, :, :2], frames[0][0].joints[:, 5:7])
    np.testing.assert_array_equal(got.keypoints[2, 1, :, :2], frames[2][0].joints[:, 5:7])
    np.testing.assert_array_equal(got.keypoints[2, 0, :, :2], frames[2][1].joints[:, 5:7])
    np.testing.assert_array_equal(got.xyz[3, 1], frames[3][0].joints[:, :3])
    np.testing.assert_array_equal(got.keypoints[2, 1, :, 2], np.array([0, 0.5, 1])[mixed])
    assert np.all(got.keypoints[1] == 0)  # empty frame: zero scores
    assert np.all(got.keypoints[0, 1] == 0) and np.all(got.keypoints[3, 0] == 0)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["4", "1", f"{a} 2 0 0 0 0 0 0.25 -0.125 2"]
    assert lines[3] == "25" and len(lines[4].split()) == 12


@settings(max_examples=30, deadline=None)
@given(
    frames=st.integers(0, 5),
    persons=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_ntu_round_trip_property(frames, persons, seed):
    rng = np.random.default_rng(seed)
    kp = np.zeros((frames, persons, 25, 3), dtype=np.float32)
    kp[..., :2] = rng.uniform(-100, 2000, kp.shape[:3] + (2,))
    kp[..., 2] = rng.choice([0.0, 0.5, 1.0], kp.shape[:3])
    kp[rng.random((frames, persons)) < 0.3] = 0  # persons missing in some frames
    ids = [72057594037927936 + i * 17 for i in range(persons)]
    buf = io.StringIO()
    write_ntu_skeleton(buf, bodies_from_keypoints(kp, ids))
    got = read_ntu_skeleton(io.BytesIO(buf.getvalue().encode()))
    present_in = kp[..., 2].max(axis=2) > 0  # [F, P]: the body is in the file in that frame
    first_seen = [
        (int(np.argmax(present_in[:, p])), p) for p in range(persons) if present_in[:, p].any()
    ]
    # Person axis: body ids in order of first appearance (within a frame, in file order).
    assert got.body_ids == [ids[p] for _, p in sorted(first_seen)]
    assert got.keypoints.shape == (frames, len(first_seen), 25, 3)
    for q, (_, p) in enumerate(sorted(first_seen)):
        here = present_in[:, p]
        np.testing.assert_array_equal(got.keypoints[here, q], kp[here, p])
        assert np.all(got.keypoints[~here, q] == 0)


def _valid_ntu_text() -> list[str]:
    buf = io.StringIO()
    rng = np.random.default_rng(3)
    write_ntu_skeleton(buf, [[_body(rng, 5, np.full(25, 2))], [_body(rng, 5, np.full(25, 2))]])
    return buf.getvalue().splitlines()


def test_ntu_truncated_file_names_file_and_line(tmp_path):
    lines = _valid_ntu_text()
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text("\n".join(lines[:40]) + "\n")
    with pytest.raises(PoseFileError) as info:
        read_ntu_skeleton(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 41: unexpected end of file")
    assert "frame 2" in message


@pytest.mark.parametrize(
    ("line", "replacement", "expected"),
    [
        (5, lambda s: s.replace(s.split()[3], "abc", 1), "line 5: bad number 'abc'"),
        (7, lambda s: " ".join(s.split()[:-1]), "line 7: expected 12 values"),
        (9, lambda s: " ".join(s.split()[:-1] + ["3"]), "line 9: trackingState"),
        (4, lambda s: "24", "line 4: expected 25 joints"),
        (1, lambda s: "two", "line 1: bad frame count 'two'"),
        (3, lambda s: "x" + s, "line 3: bad bodyID"),
        (5, lambda s: s.replace(s.split()[0], "nan", 1), "line 5: bad number 'nan'"),
    ],
)
def test_ntu_malformed_lines(tmp_path, line, replacement, expected):
    lines = _valid_ntu_text()
    lines[line - 1] = replacement(lines[line - 1])
    path = tmp_path / "bad.skeleton"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PoseFileError, match=expected) as info:
        read_ntu_skeleton(path)
    assert str(path) in str(info.value)


def test_ntu_trailing_data_and_crlf(tmp_path):
    lines = _valid_ntu_text()
    crlf = tmp_path / "crlf.skeleton"
    crlf.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    assert read_ntu_skeleton(crlf).keypoints.shape == (2, 1, 25, 3)
    extra = tmp_path / "extra.skeleton"
    extra.write_text("\n".join(lines) + "\n0\n")
    with pytest.raises(PoseFileError, match=f"line {len(lines) + 1}: unexpected data"):
        read_ntu_skeleton(extra)


def test_parse_ntu_name():
    name = parse_ntu_name("S001C002P003R002A013")
    assert (name.setup, name.camera, name.performer, name.replication, name.action) == (
        1, 2, 3, 2, 13,
    )  # fmt: skip
    assert parse_ntu_name("/data/nturgb+d_rgb/S017C003P020R002A120_rgb.avi").action == 120
    assert parse_ntu_name("S005C001P010R001A060.skeleton").name == "S005C001P010R001A060"
    with pytest.raises(ValueError, match="not an NTU"):
        parse_ntu_name("video_001.avi")


# ---------------------------------------------------------------- pyskl / mmaction pickles


def _annotations() -> list[dict]:
    rng = np.random.default_rng(4)
    return [
        {
            "frame_dir": "S001C001P001R001A001",
            "label": 0,
            "img_shape": (1080, 1920),
            "total_frames": 6,
            "keypoint": rng.uniform(0, 1900, (2, 6, 17, 2)).astype(np.float32),
            "keypoint_score": rng.uniform(0, 1, (2, 6, 17)).astype(np.float32),
        },
        {
            "frame_dir": "-abc_def123",
            "label": 7,
            "img_shape": (256, 340),
            "original_shape": (720, 960),
            "total_frames": 3,
            "keypoint": np.zeros((1, 3, 17, 2), dtype=np.float32),
            "keypoint_score": np.zeros((1, 3, 17), dtype=np.float32),
        },
    ]


def test_mmaction_round_trip(tmp_path):
    anns = _annotations()
    path = tmp_path / "poses.pkl"
    write_mmaction_pickle(path, anns, {"xsub_train": [anns[0]["frame_dir"]], "xsub_val": []})
    got = read_mmaction_pickle(path)
    assert list(got) == [a["frame_dir"] for a in anns]
    kp, meta = got["S001C001P001R001A001"]
    assert kp.shape == (6, 2, 17, 3) and kp.dtype == np.float32
    np.testing.assert_array_equal(kp[..., :2], anns[0]["keypoint"].transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(kp[..., 2], anns[0]["keypoint_score"].transpose(1, 0, 2))
    assert meta["label"] == 0 and meta["img_shape"] == (1080, 1920)
    assert meta["original_shape"] == (1080, 1920) and meta["total_frames"] == 6
    assert meta["splits"] == ["xsub_train"]
    assert got["-abc_def123"][1]["original_shape"] == (720, 960)
    assert got["-abc_def123"][1]["splits"] == []
    # The layout pyskl reads, with plain pickle; and no numpy-2-only module names in the file.
    raw = path.read_bytes()
    assert b"numpy._core" not in raw and b"numpy.core" not in raw
    doc = pickle.loads(raw)
    assert set(doc) == {"split", "annotations"}
    assert doc["annotations"][0]["keypoint"].shape == (2, 6, 17, 2)
    doc["annotations"][0]["keypoint"][0, 0, 0, 0] = 1.0  # arrays are writable, as pyskl expects


def test_mmaction_reads_plain_numpy_pickles_from_file_objects():
    anns = _annotations()
    raw = pickle.dumps({"split": {"train": ["-abc_def123"]}, "annotations": anns})
    got = read_mmaction_pickle(io.BytesIO(raw))
    assert got["-abc_def123"][1]["splits"] == ["train"]
    assert got["S001C001P001R001A001"][0].shape == (6, 2, 17, 3)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo hacked",))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (pickle.dumps({"annotations": [_Evil()]}), "refusing to load global"),
        (pickle.dumps({"split": {}})[:-3], "not a readable pickle"),
        (pickle.dumps({"split": {}}), "missing key 'annotations'"),
        (
            pickle.dumps(
                {"annotations": [{"frame_dir": "a", "keypoint": np.zeros((1, 2, 25, 3))}]}
            ),
            "3D skeleton",
        ),
        (pickle.dumps({"annotations": [{"frame_dir": "k", "raw_file": "x.pkl"}]}), "raw_file"),
        (
            pickle.dumps(
                {
                    "annotations": [
                        {
                            "frame_dir": "a",
                            "keypoint": np.zeros((1, 2, 17, 2)),
                            "keypoint_score": np.zeros((1, 3, 17)),
                        }
                    ]
                }
            ),
            "keypoint_score shape",
        ),
    ],
)
def test_mmaction_bad_pickles(tmp_path, payload, expected):
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload)
    with pytest.raises(PoseFileError, match=expected) as info:
        read_mmaction_pickle(path)
    assert str(path) in str(info.value)


def test_mmaction_writer_validates():
    anns = _annotations()
    with pytest.raises(ValueError, match="unknown frame_dir"):
        write_mmaction_pickle(io.BytesIO(), anns, {"train": ["nope"]})
    bad = dict(anns[0], total_frames=5)
    with pytest.raises(ValueError, match="total 5"):
        write_mmaction_pickle(io.BytesIO(), [bad], {})
    with pytest.raises(ValueError, match="duplicate"):
        write_mmaction_pickle(io.BytesIO(), [anns[0], anns[0]], {})
