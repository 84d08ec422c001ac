"""Keypoint layouts (pipeline.skeletons): the bone lists are part of the shard format."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.skeletons import (
    LAYOUT_NAMES,
    can_convert,
    convert_keypoints,
    flip_keypoints,
    get_layout,
)

# The contract's bone lists (docs/design.md, "Pose and rasters"), order and direction.
CONTRACT_BONES = {
    "openpose18": [
        (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
        (11, 12), (12, 13), (0, 14), (0, 15), (14, 16), (15, 17),
    ],
    "coco17": [
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ],
    "ntu25": [
        (a - 1, b - 1)
        for a, b in [
            (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
            (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
            (19, 18), (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
        ]
    ],
}  # fmt: skip
NUM_JOINTS = {"openpose18": 18, "coco17": 17, "ntu25": 25}


def _side(name: str) -> tuple[str | None, str]:
    """('L' or 'R' or None, the name without its side) for all three naming styles."""
    for pattern, side in (
        (r"^left_(.+)$", "L"),
        (r"^right_(.+)$", "R"),
        (r"^L([A-Z].*)$", "L"),
        (r"^R([A-Z].*)$", "R"),
        (r"^(.+)Left$", "L"),
        (r"^(.+)Right$", "R"),
    ):
        match = re.match(pattern, name)
        if match:
            return side, match.group(1).lower()
    return None, name.lower()


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_bones_are_the_contracts(name: str) -> None:
    layout = get_layout(name)
    assert layout.name == name
    assert len(layout.names) == layout.num_joints == NUM_JOINTS[name]
    assert layout.bones.dtype.kind == "i" and layout.bones.shape == (len(CONTRACT_BONES[name]), 2)
    assert [tuple(b) for b in layout.bones.tolist()] == CONTRACT_BONES[name]
    assert layout.num_channels == layout.num_joints + 2 * len(CONTRACT_BONES[name])
    assert get_layout(layout) is layout


def test_contract_sizes() -> None:
    assert {n: len(b) for n, b in CONTRACT_BONES.items()} == {
        "openpose18": 17,
        "coco17": 19,
        "ntu25": 24,
    }
    assert get_layout("coco17").num_channels == 55


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_flip_pairs_swap_left_and_right(name: str) -> None:
    layout = get_layout(name)
    pairs = [tuple(p) for p in layout.flip_pairs.tolist()]
    in_pairs = {j for p in pairs for j in p}
    assert len(in_pairs) == 2 * len(pairs)  # each joint in at most one pair
    for a, b in pairs:
        (side_a, rest_a), (side_b, rest_b) = _side(layout.names[a]), _side(layout.names[b])
        assert {side_a, side_b} == {"L", "R"} and rest_a == rest_b, (
            layout.names[a],
            layout.names[b],
        )
    for j, joint in enumerate(layout.names):
        # Every sided joint is paired; central joints are not.
        assert (_side(joint)[0] is not None) == (j in in_pairs), joint
    perm = layout.flip_index
    assert sorted(perm.tolist()) == list(range(layout.num_joints))
    assert (perm[perm] == np.arange(layout.num_joints)).all()


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_every_bone_has_a_mirror(name: str) -> None:
    layout = get_layout(name)
    bones = [tuple(b) for b in layout.bones.tolist()]
    f = layout.flip_index
    for i, (a, b) in enumerate(bones):
        j = int(layout.bone_flip_index[i])
        sign = tuple(layout.bone_flip_sign[i].tolist())
        if sign == (-1.0, 1.0):
            assert bones[j] == (f[a], f[b])
        else:
            assert sign == (1.0, -1.0) and bones[j] == (f[b], f[a])
        # The mirror of the mirror is the bone itself, with the same sign rule.
        assert int(layout.bone_flip_index[j]) == i
        assert tuple(layout.bone_flip_sign[j].tolist()) == sign
    idx = layout.channel_flip_index
    assert sorted(idx.tolist()) == list(range(layout.num_channels))
    assert (idx[idx] == np.arange(layout.num_channels)).all()
    assert set(layout.channel_flip_sign[: layout.num_joints].tolist()) == {1.0}


def test_reversed_mirrors_are_the_cross_body_bones() -> None:
    """Only bones joining a left joint to its own right twin (shoulders, hips) mirror reversed."""
    for name in LAYOUT_NAMES:
        layout = get_layout(name)
        reversed_bones = {
            tuple(layout.bones[i].tolist())
            for i in range(layout.num_bones)
            if tuple(layout.bone_flip_sign[i].tolist()) == (1.0, -1.0)
        }
        expected = {(5, 6), (11, 12), (1, 2)} if name == "coco17" else set()
        assert reversed_bones == expected, name


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_flip_keypoints_twice_is_identity(name: str) -> None:
    layout = get_layout(name)
    rng = np.random.default_rng(3)
    kp = rng.uniform(-5, 70, (4, 3, layout.num_joints, 3)).astype(np.float32)
    kp[0, 0, 0] = np.nan
    once = flip_keypoints(kp, 64, name)
    assert once.dtype == np.float32 and once.shape == kp.shape
    f = layout.flip_index
    np.testing.assert_array_equal(once[..., 0], 63 - kp[..., f, 0])
    np.testing.assert_array_equal(once[..., 1:], kp[..., f, 1:])
    # Identity up to float32 rounding of 63 - (63 - x); exact on a quarter-pixel grid.
    np.testing.assert_allclose(flip_keypoints(once, 64, layout), kp, rtol=0, atol=1e-5)
    grid = np.round(kp * 4) / 4
    np.testing.assert_array_equal(flip_keypoints(flip_keypoints(grid, 64, name), 64, name), grid)
    if name == "coco17":
        assert once[0, 1, 1, 0] == 63 - kp[0, 1, 2, 0]  # left eye <- mirrored right eye


def test_coco17_to_openpose18() -> None:
    coco, op = get_layout("coco17"), get_layout("openpose18")
    rng = np.random.default_rng(4)
    kp = rng.uniform(0, 100, (2, 3, 17, 3)).astype(np.float32)
    out = convert_keypoints(kp, "coco17", "openpose18")
    assert out.shape == (2, 3, 18, 3) and out.dtype == np.float32
    coco_index = {(_side(n)[0] or "", _side(n)[1]): i for i, n in enumerate(coco.names)}
    for j, joint in enumerate(op.names):
        if joint == "Neck":
            ls, rs = kp[..., 5, :], kp[..., 6, :]
            np.testing.assert_allclose(out[..., j, :2], (ls[..., :2] + rs[..., :2]) / 2)
            np.testing.assert_array_equal(out[..., j, 2], np.minimum(ls[..., 2], rs[..., 2]))
        else:
            side, rest = _side(joint)
            np.testing.assert_array_equal(out[..., j, :], kp[..., coco_index[side or "", rest], :])
    # Round trips: coco17 -> openpose18 -> coco17 is exact; the other way rebuilds the neck.
    np.testing.assert_array_equal(convert_keypoints(out, "openpose18", "coco17"), kp)
    back = convert_keypoints(convert_keypoints(out, "openpose18", "coco17"), "coco17", "openpose18")
    np.testing.assert_array_equal(back, out)
    assert can_convert("coco17", "openpose18") and can_convert("openpose18", "coco17")
    assert can_convert("ntu25", "ntu25") and not can_convert("ntu25", "coco17")


def test_conversion_errors() -> None:
    with pytest.raises(ValueError, match="no conversion"):
        convert_keypoints(np.zeros((1, 25, 3)), "ntu25", "coco17")
    with pytest.raises(ValueError, match="joints"):
        convert_keypoints(np.zeros((1, 18, 3)), "coco17", "openpose18")
    same = np.ones((2, 17, 3), np.float32)
    copy = convert_keypoints(same, "coco17", "coco17")
    np.testing.assert_array_equal(copy, same)
    assert copy is not same


def test_unknown_layout_names_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        get_layout("body25")
    message = str(err.value)
    assert "body25" in message
    for name in LAYOUT_NAMES:
        assert name in message
    with pytest.raises(ValueError, match="coco17"):
        convert_keypoints(np.zeros((1, 17, 3)), "coco17", "halpe26")
    with pytest.raises(ValueError, match="openpose18"):
        flip_keypoints(np.zeros((1, 17, 3)), 10, "coco")


def test_layout_json() -> None:
    data = get_layout("ntu25").to_json()
    assert data["layout"] == "ntu25" and len(data["joint_names"]) == 25
    assert data["bones"][1] == [1, 20] and data["flip_pairs"][0] == [4, 8]
