"""Augmentation: one crop/flip moves frames, keypoints and rasters alike (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.raster import flip_raster, render_clip
from pipeline.skeletons import get_layout
from train import augment
from train.augment import Crop

COCO = get_layout("coco17")


@st.composite
def frames_and_crops(draw):
    """A stored frame size, a crop inside it (any scale, both sides) and a marked pixel."""
    h = draw(st.integers(8, 30)) * 4
    w = draw(st.integers(8, 30)) * 4
    ch = draw(st.integers(h // 2, h))
    cw = draw(st.integers(w // 2, w))
    y0 = draw(st.integers(0, h - ch))
    x0 = draw(st.integers(0, w - cw))
    size = draw(st.sampled_from([16, 32, 48, 64]))
    flip = draw(st.booleans())
    # Marked pixel well inside the crop, so its blob is not cut by the crop border. The
    # antialiasing kernel spans (crop side / output side) source pixels along each axis, so
    # each axis has its own margin (one margin from the longer side left no room along a
    # narrow crop: a 16-px-wide, 120-px-high crop at size 16).
    margin_x = max(2, int(np.ceil(cw / size)) + 1)
    margin_y = max(2, int(np.ceil(ch / size)) + 1)
    mx = draw(st.integers(x0 + margin_x, x0 + cw - 1 - margin_x))
    my = draw(st.integers(y0 + margin_y, y0 + ch - 1 - margin_y))
    return (h, w), Crop(x0, y0, cw, ch, size, flip), (mx, my)


@settings(max_examples=60, deadline=None)
@given(frames_and_crops())
def test_keypoint_lands_where_the_marked_pixel_lands(case):
    (h, w), crop, (mx, my) = case
    frame = np.zeros((1, h, w, 3), dtype=np.uint8)
    frame[0, my, mx] = 255
    out = augment.crop_frames(frame, crop)[0, 0].double()
    # Bilinear (antialiased when shrinking) spreads the pixel into a symmetric blob centred on
    # its new position: the intensity centroid is where the pixel went.
    ys, xs = torch.meshgrid(torch.arange(crop.size), torch.arange(crop.size), indexing="ij")
    cx = float((out * xs).sum() / out.sum())
    cy = float((out * ys).sum() / out.sum())
    kp = np.zeros((1, 17, 3), dtype=np.float32)
    kp[0, 5] = (mx, my, 1.0)  # left shoulder
    moved = augment.crop_keypoints(kp, crop, COCO)
    joint = 6 if crop.flip else 5  # a flip makes the left shoulder the right one
    # Tolerance: uint8 rounding of a faint blob moves the centroid by a fraction of a pixel.
    assert abs(moved[0, joint, 0] - cx) < 0.35
    assert abs(moved[0, joint, 1] - cy) < 0.35
    assert moved[0, joint, 2] == 1.0


@settings(max_examples=40, deadline=None)
@given(frames_and_crops(), st.integers(0, 2**31 - 1))
def test_flip_twice_is_identity(case, seed):
    (h, w), crop, _ = case
    rng = np.random.default_rng(seed)
    no_flip = Crop(crop.x0, crop.y0, crop.w, crop.h, crop.size, False)
    with_flip = Crop(crop.x0, crop.y0, crop.w, crop.h, crop.size, True)
    # Flipping the output of a flipping crop again (a full-output crop that flips) gives the
    # crop without a flip: keypoints (positions and joint order), frames and rasters alike.
    mirror = Crop(0, 0, crop.size, crop.size, crop.size, True)
    kp = rng.uniform(0, min(h, w), size=(3, 2, 17, 3)).astype(np.float32)
    back = augment.crop_keypoints(augment.crop_keypoints(kp, with_flip, COCO), mirror, COCO)
    np.testing.assert_allclose(back, augment.crop_keypoints(kp, no_flip, COCO), atol=1e-4)
    frames = rng.integers(0, 255, size=(2, h, w, 3), dtype=np.uint8)
    assert torch.equal(
        augment.crop_frames(
            augment.crop_frames(frames, with_flip).permute(0, 2, 3, 1).numpy(), mirror
        ),
        augment.crop_frames(frames, no_flip),
    )
    raster = rng.uniform(-1, 1, size=(2, COCO.num_channels, h // 4, w // 4)).astype(np.float32)
    side = crop.size // 4
    flipped = augment.crop_raster(raster, with_flip, COCO, (h, w), side)
    np.testing.assert_allclose(
        flip_raster(flipped, COCO),
        augment.crop_raster(raster, no_flip, COCO, (h, w), side),
        atol=1e-6,
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 80), st.integers(8, 80), st.integers(0, 2**31 - 1))
def test_train_crop_follows_tsm(h, w, seed):
    h, w = h * 4, w * 4
    crop = augment.sample_train_crop(np.random.default_rng(seed), h, w, 224)
    sides = [int(min(h, w) * s) for s in augment.SCALES]
    assert crop.w in sides and crop.h in sides
    assert abs(sides.index(crop.w) - sides.index(crop.h)) <= 1
    assert 0 <= crop.x0 <= w - crop.w and 0 <= crop.y0 <= h - crop.h
    assert crop.size == 224


def test_train_crops_vary_and_flip_half_the_time():
    rng = np.random.default_rng(0)
    crops = [augment.sample_train_crop(rng, 256, 340, 224) for _ in range(400)]
    assert 150 < sum(c.flip for c in crops) < 250
    assert len({(c.w, c.h) for c in crops}) == 10  # 4 scales, pairs at most one step apart
    assert len({c.x0 for c in crops}) > 20


def test_center_crop_is_the_middle_square():
    crop = augment.center_crop(256, 340, 224)
    assert (crop.x0, crop.y0, crop.w, crop.h, crop.flip) == (42, 0, 256, 256, False)


def test_rendered_pose_matches_the_stored_raster_crop():
    # Rendering from augmented keypoints and cropping a raster rendered at stored resolution
    # must put the same joint in the same place (the two --pose-input paths agree).
    h, w = 64, 80
    kp = np.zeros((1, 1, 17, 3), dtype=np.float32)
    kp[0, 0, 0] = (40.0, 30.0, 1.0)
    stored = render_clip(kp, COCO.bones, (h // 4, w // 4), scale=0.25, sigma=1.0)
    crop = Crop(8, 4, 56, 56, 64, True)
    moved = augment.crop_keypoints(kp, crop, COCO)
    params = type("P", (), {"sigma": 1.0 * 64 / 56, "paf_width": 1.0, "max_persons": 5})
    params.score_threshold = 0.1
    rendered = augment.render_pose(moved, COCO, 64, params)[0, 0]
    cropped = augment.crop_raster(stored, crop, COCO, (h, w), 16)[0, 0]
    peak_r = np.unravel_index(rendered.argmax(), rendered.shape)
    peak_c = np.unravel_index(cropped.argmax(), cropped.shape)
    assert peak_r == peak_c


def test_normalisation():
    rgb = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(augment.normalise_rgb(rgb, augment.UNIT), torch.ones(1, 3, 2, 2))
    x = augment.normalise_rgb(rgb, augment.IMAGENET)
    expected = (1 - torch.tensor(augment.IMAGENET.mean)) / torch.tensor(augment.IMAGENET.std)
    assert torch.allclose(x[0, :, 0, 0], expected.float())


# ----------------------------------------------------------------------------------------------
# Person-centred pose crop (PoseC3D's PoseCompact)


@st.composite
def clip_keypoints(draw):
    """A clip [T, P, 17, 3] with a person somewhere in a 96 x 128 frame, some joints missing."""
    t, p = draw(st.integers(1, 4)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    cx, cy = rng.uniform(20, 108), rng.uniform(20, 76)
    spread = rng.uniform(8, 40)
    kp = np.zeros((t, p, 17, 3), dtype=np.float32)
    kp[..., 0] = cx + rng.uniform(-spread, spread, (t, p, 17))
    kp[..., 1] = cy + rng.uniform(-spread, spread, (t, p, 17))
    kp[..., 2] = np.where(rng.random((t, p, 17)) < 0.8, rng.uniform(0.2, 1.0, (t, p, 17)), 0.0)
    kp[0, 0, :2, 2] = 0.9  # at least two joints pass the threshold
    kp[0, 0, 0, :2], kp[0, 0, 1, :2] = (cx - spread, cy - spread), (cx + spread, cy + spread)
    return kp


@settings(max_examples=80, deadline=None)
@given(clip_keypoints(), st.integers(8, 64), st.booleans())
def test_person_crop_holds_every_joint_centred_and_square(kp, size, flip):
    crop = augment.person_crop(kp, 0.1, size, flip)
    assert crop is not None and crop.w == crop.h and crop.size == size and crop.flip == flip
    moved = augment.crop_keypoints(kp, crop, COCO)
    ok = moved[..., 2] >= 0.1  # a flip swaps left and right joints, scores with them
    xy = moved[..., :2][ok]
    # The padded box holds every joint that passes the threshold, with room to spare.
    margin = 0.5 * augment.PERSON_PADDING / (1 + augment.PERSON_PADDING) * size
    assert xy.min() >= margin - 0.5 - 1e-3 and xy.max() <= size - 1 - margin + 0.5 + 1e-3
    # The union box of those joints is centred in the crop on its longer side.
    span = xy.max(axis=0) - xy.min(axis=0)
    longer = int(np.argmax(span))
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2
    assert abs(centre[longer] - (size - 1) / 2) < 1e-3 * size + 1e-3
    assert span[longer] == pytest.approx(size / (1 + augment.PERSON_PADDING), rel=1e-4)


@settings(max_examples=40, deadline=None)
@given(clip_keypoints(), st.integers(0, 2**31 - 1))
def test_person_crop_jitter_stays_near_the_box(kp, seed):
    still = augment.person_crop(kp, 0.1, 32, False)
    jittered = augment.person_crop(kp, 0.1, 32, False, np.random.default_rng(seed))
    j = augment.PERSON_SCALE_JITTER
    assert still.w * (1 - j) - 1e-4 <= jittered.w <= still.w * (1 + j) + 1e-4
    shift = augment.PERSON_SHIFT_JITTER * jittered.w + 1e-4
    assert abs((jittered.x0 + jittered.w / 2) - (still.x0 + still.w / 2)) <= shift
    assert abs((jittered.y0 + jittered.h / 2) - (still.y0 + still.h / 2)) <= shift


def test_pose_crop_falls_back_to_the_frame_crop():
    frame = Crop(8, 4, 56, 56, 64, True)
    empty = np.zeros((4, 1, 17, 3), dtype=np.float32)  # no person found
    assert augment.pose_crop("person", frame, empty, 0.1, 16) == Crop(8, 4, 56, 56, 16, True)
    one_joint = empty.copy()
    one_joint[0, 0, 3] = (40, 30, 0.9)  # a box under PoseCompact's 10-pixel threshold
    assert augment.pose_crop("person", frame, one_joint, 0.1, 16).x0 == 8
    assert augment.pose_crop("frame", frame, one_joint, 0.1, 24) == Crop(8, 4, 56, 56, 24, True)
    with pytest.raises(ValueError, match="pose crop"):
        augment.pose_crop("body", frame, empty, 0.1, 16)


def test_rendering_at_the_raster_side_equals_the_quarter_rule():
    # Cropping keypoints straight to the raster side and rendering at scale 1 is the paper's
    # quarter-of-the-input raster (keypoints in input pixels, rendered at scale 1/4).
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 96, (2, 1, 17, 2)), np.ones((2, 1, 17, 1))], -1)
    crop = Crop(10, 0, 84, 84, 64, True)
    params = type("P", (), {"sigma": 0.5, "paf_width": 1.0, "max_persons": 5})
    params.score_threshold = 0.1
    quarter = augment.render_pose(augment.crop_keypoints(kp, crop, COCO), COCO, 64, params)
    side = Crop(10, 0, 84, 84, 16, True)
    direct = augment.render_pose(augment.crop_keypoints(kp, side, COCO), COCO, 16, params, side=16)
    np.testing.assert_allclose(quarter, direct, atol=1e-4)
