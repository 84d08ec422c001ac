"""Raster kernels (pipeline.raster) against the numpy specification (pipeline.raster_reference).

Property tests draw random clips (keypoints outside the image, coincident joints, NaN and
infinite values, no persons, more persons than kept, low scores, any size and scale) and require
the numba kernel to match the reference within 1e-5; the flip property ties rasters to
``skeletons.flip_keypoints`` for every layout; hand-computed cases pin the formulas themselves.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.raster import (
    HEATMAP_CUTOFF,
    dequantize_raster,
    flip_raster,
    quantize_raster,
    render_clip,
)
from pipeline.raster_reference import render_clip_reference
from pipeline.skeletons import LAYOUT_NAMES, flip_keypoints, get_layout

TOL = 1e-5
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Coordinates: mostly inside a small image, some on the pixel grid (so joints coincide and
# segments pass exactly through pixel centres and boundaries), some far outside or not finite.
_coords = st.one_of(
    st.floats(-8.0, 40.0, allow_nan=False, width=32),
    st.integers(-3, 30).map(float),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e6, -1e6, 1e30, -3e38]),
)
_scores = st.one_of(
    st.floats(0.0, 1.0, width=32),
    st.sampled_from([0.0, 0.05, 0.1, 1.0, np.nan, np.inf, -1.0]),
)


@st.composite
def clips(draw: st.DrawFn) -> dict:
    """A random clip with bones and raster parameters."""
    frames = draw(st.integers(0, 3))
    persons = draw(st.integers(0, 7))
    joints = draw(st.integers(1, 6))
    shape = (frames, persons, joints)
    xy = draw(hnp.arrays(np.float32, shape + (2,), elements=_coords))
    score = draw(hnp.arrays(np.float32, shape + (1,), elements=_scores))
    num_bones = draw(st.integers(0, 5))
    bones = draw(
        st.lists(
            st.tuples(st.integers(0, joints - 1), st.integers(0, joints - 1)),
            min_size=num_bones,
            max_size=num_bones,
        )
    )
    return {
        "keypoints": np.concatenate([xy, score], axis=-1),
        "bones": np.array(bones, dtype=np.int64).reshape(-1, 2),
        "out_hw": (draw(st.integers(1, 24)), draw(st.integers(1, 24))),
        "scale": draw(st.sampled_from([0.25, 0.5, 1.0, 2.0]) | st.floats(0.1, 3.0)),
        "sigma": draw(st.sampled_from([0.5]) | st.floats(0.3, 2.5)),
        "paf_width": draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 3.0)),
        "max_persons": draw(st.integers(0, 6)),
        "score_threshold": draw(st.sampled_from([0.1]) | st.floats(0.0, 0.6)),
    }


@PROPERTY
@given(clips())
def test_kernel_matches_reference(clip: dict) -> None:
    got = render_clip(**clip)
    want = render_clip_reference(**clip)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@settings(max_examples=40, deadline=None)
@given(clips(), st.floats(-1e3, 1e3, width=32))
def test_out_is_zeroed_and_reused(clip: dict, dirt: float) -> None:
    fresh = render_clip(**clip)
    frames, channels, (h, w) = len(fresh), fresh.shape[1], clip["out_hw"]
    out = np.full((frames, channels, h, w), dirt, dtype=np.float32)
    if out.size:
        out.flat[0] = np.nan
    got = render_clip(**clip, out=out)
    assert got is out
    np.testing.assert_array_equal(out, fresh)
    ref_out = np.full_like(out, dirt)
    assert render_clip_reference(**clip, out=ref_out) is ref_out
    np.testing.assert_allclose(ref_out, fresh, rtol=0, atol=TOL)


# --- Hand-computed cases -----------------------------------------------------------------------


def _one_person(points: list[tuple[float, float]], score: float = 1.0) -> np.ndarray:
    kp = np.zeros((1, 1, len(points), 3), dtype=np.float32)
    kp[0, 0, :, :2] = points
    kp[0, 0, :, 2] = score
    return kp


def test_gaussian_peak_and_neighbours() -> None:
    raster = render_clip(_one_person([(10.0, 6.0)]), np.zeros((0, 2), int), (16, 20))
    heat = raster[0, 0]
    assert heat[6, 10] == 1.0
    assert heat[6, 11] == pytest.approx(math.exp(-1 / (2 * 0.25)), abs=1e-7)
    assert heat[5, 10] == pytest.approx(math.exp(-2.0), abs=1e-7)
    assert heat[7, 11] == pytest.approx(math.exp(-4.0), abs=1e-7)
    assert heat[6, 15] == 0.0  # far below the truncation level
    assert heat.max() == 1.0 and np.argmax(heat) == 6 * 20 + 10


def test_source_to_raster_mapping() -> None:
    # x_r = (x + 0.5) * scale - 0.5: source 13.5 -> raster 3 at scale 1/4, pixel-centre aligned.
    raster = render_clip(_one_person([(13.5, 9.5)]), np.zeros((0, 2), int), (8, 8), scale=0.25)
    assert raster[0, 0, 2, 3] == 1.0
    # At scale 2 the same point lands at (13.5 + 0.5) * 2 - 0.5 = 27.5: between two pixels.
    raster = render_clip(_one_person([(13.5, 9.5)]), np.zeros((0, 2), int), (24, 32), scale=2.0)
    expected = math.exp(-(0.25 + 0.25) / 0.5)
    np.testing.assert_allclose(raster[0, 0, 19:21, 27:29], expected, atol=1e-7)


def test_heatmaps_sum_over_persons_and_clamp_to_one() -> None:
    kp = np.zeros((1, 2, 1, 3), dtype=np.float32)
    kp[0, 0, 0] = (5.0, 5.0, 1.0)
    kp[0, 1, 0] = (6.0, 5.0, 1.0)
    heat = render_clip(kp, np.zeros((0, 2), int), (10, 12))[0, 0]
    assert heat[5, 5] == 1.0 and heat[5, 6] == 1.0  # 1 + exp(-2) clamped
    assert heat[4, 5] == pytest.approx(math.exp(-2) + math.exp(-4), abs=1e-6)


def test_horizontal_bone() -> None:
    kp = _one_person([(2.0, 5.0), (9.0, 5.0)])
    raster = render_clip(kp, [(0, 1)], (12, 14), paf_width=1.0)
    paf_x, paf_y = raster[0, 2], raster[0, 3]
    covered = np.zeros((12, 14), bool)
    covered[4:7, 2:10] = True  # rows within distance 1, columns on the segment, ends included
    np.testing.assert_array_equal(paf_x, np.where(covered, 1.0, 0.0))
    np.testing.assert_array_equal(paf_y, 0.0)
    # Reversed bone direction: the vector flips.
    raster = render_clip(kp, [(1, 0)], (12, 14), paf_width=1.0)
    np.testing.assert_array_equal(raster[0, 2], np.where(covered, -1.0, 0.0))
    # Narrower width: only the bone's own row.
    raster = render_clip(kp, [(0, 1)], (12, 14), paf_width=0.5)
    assert raster[0, 2, 5, 2:10].tolist() == [1.0] * 8
    assert raster[0, 2].sum() == 8.0


def test_diagonal_bone_unit_vector() -> None:
    raster = render_clip(_one_person([(1.0, 1.0), (7.0, 7.0)]), [(0, 1)], (10, 10))
    paf = raster[0, 2:4]
    on = np.abs(paf).sum(0) > 0
    inv = 1 / math.sqrt(2)
    np.testing.assert_allclose(paf[:, on], inv, atol=1e-7)
    assert on[4, 4] and on[4, 5] and on[5, 4]  # distance 1/sqrt(2) <= 1
    assert not on[4, 6] and not on[0, 0] and not on[8, 8]  # distance sqrt(2); beyond the ends


def test_crossing_bones_average() -> None:
    kp = np.zeros((1, 2, 2, 3), dtype=np.float32)
    kp[0, 0] = [(1.0, 4.0, 1.0), (8.0, 4.0, 1.0)]  # horizontal, to the right
    kp[0, 1] = [(4.0, 1.0, 1.0), (4.0, 8.0, 1.0)]  # vertical, downwards
    raster = render_clip(kp, [(0, 1)], (10, 10), paf_width=0.5)
    np.testing.assert_allclose(raster[0, 2:4, 4, 4], (0.5, 0.5))
    np.testing.assert_allclose(raster[0, 2:4, 4, 6], (1.0, 0.0))
    np.testing.assert_allclose(raster[0, 2:4, 6, 4], (0.0, 1.0))


def test_segment_far_outside_the_image() -> None:
    # End points a million pixels away: the line still crosses the image, rows 2..4.
    kp = _one_person([(-1e6, 3.0), (1e6, 3.0)])
    raster = render_clip(kp, [(0, 1)], (8, 6))
    assert (raster[0, 1] == 0).all() and (raster[0, 0] == 0).all()  # heatmaps outside
    np.testing.assert_array_equal(raster[0, 2, 2:5], 1.0)
    assert raster[0, 2].sum() == 18.0


def test_threshold_and_non_finite_keypoints() -> None:
    points = [(3.0, 3.0), (6.0, 3.0)]
    bones = [(0, 1)]
    for score in (0.0999, np.nan, -np.inf):
        kp = _one_person(points)
        kp[0, 0, 1, 2] = score
        raster = render_clip(kp, bones, (8, 8))
        assert raster[0, 0, 3, 3] == 1.0
        assert (raster[0, 1:] == 0).all()  # joint 1 and the bone are gone
    kp = _one_person(points)
    kp[0, 0, 0, 0] = np.nan
    raster = render_clip(kp, bones, (8, 8))
    assert (raster[0, 0] == 0).all() and raster[0, 1, 3, 6] == 1.0 and (raster[0, 2:] == 0).all()
    kp = _one_person(points, score=0.1)  # exactly the threshold: kept
    assert render_clip(kp, bones, (8, 8))[0, 2, 3, 4] == 1.0


def test_zero_length_bone_draws_nothing() -> None:
    raster = render_clip(_one_person([(3.0, 3.0), (3.0, 3.0)]), [(0, 1), (1, 1)], (8, 8))
    assert raster[0, 0, 3, 3] == 1.0
    assert (raster[0, 2:] == 0).all()


def test_top_persons_by_mean_score() -> None:
    # Seven persons, each with one joint on its own column (4 px apart); person p scores
    # (p + 1) / 10 on average, so persons 0 and 1 are dropped. NaN scores count as 0 in the mean.
    kp = np.zeros((1, 7, 2, 3), dtype=np.float32)
    for p in range(7):
        kp[0, p, 0] = (4.0 * p + 1, 2.0, 1.0)
        kp[0, p, 1] = (0.0, 0.0, (p + 1) / 5 - 1.0)
    kp[0, 6, 1, 2] = np.nan  # mean 0.5: ties with person 4, ranks after it, still kept
    heat = render_clip(kp, np.zeros((0, 2), int), (4, 30), max_persons=5)[0, 0]
    peaks = [float(heat[2, 4 * p + 1]) for p in range(7)]
    assert peaks[:2] == [0.0, 0.0]
    assert peaks[2:] == [1.0] * 5
    heat = render_clip(kp, np.zeros((0, 2), int), (4, 30), max_persons=1)[0, 0]
    assert heat[2, 21] == 1.0 and np.count_nonzero(heat > 0.5) == 1  # person 5 only
    heat = render_clip(kp, np.zeros((0, 2), int), (4, 30), max_persons=3)[0, 0]
    assert [float(heat[2, 4 * p + 1]) for p in (3, 4, 5, 6)] == [0.0, 1.0, 1.0, 1.0]
    # Ties keep the input order.
    kp[0, :, 1, 2] = 0.5
    heat = render_clip(kp, np.zeros((0, 2), int), (4, 30), max_persons=2)[0, 0]
    assert [float(heat[2, 4 * p + 1]) for p in range(3)] == [1.0, 1.0, 0.0]


def test_empty_clips() -> None:
    bones = get_layout("coco17").bones
    assert render_clip(np.zeros((0, 3, 17, 3)), bones, (5, 7)).shape == (0, 55, 5, 7)
    out = np.ones((4, 55, 5, 7), np.float32)
    assert not render_clip(np.zeros((4, 0, 17, 3)), bones, (5, 7), out=out).any()
    kp = np.ones((4, 2, 17, 3), np.float32)
    assert not render_clip(kp, bones, (5, 7), max_persons=0).any()


def test_layout_bones_and_inputs_in_any_form() -> None:
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 30, (2, 3, 17, 3)).astype(np.float64)
    kp[..., 2] = rng.uniform(0, 1, (2, 3, 17))
    bones = get_layout("coco17").bones
    want = render_clip(kp.astype(np.float32), bones, (9, 11), scale=0.3)
    assert want.shape == (2, 55, 9, 11) and want.any()
    np.testing.assert_array_equal(render_clip(kp, bones.tolist(), (9, 11), scale=0.3), want)
    strided = np.zeros((2, 3, 17, 6), np.float32)
    strided[..., ::2] = kp
    np.testing.assert_array_equal(render_clip(strided[..., ::2], bones, (9, 11), scale=0.3), want)
    with ThreadPoolExecutor(2) as pool:  # nogil kernels: concurrent calls do not interfere
        for got in pool.map(lambda _: render_clip(kp, bones, (9, 11), scale=0.3), range(6)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"keypoints": np.zeros((2, 17, 3))}, "keypoints"),
        ({"keypoints": np.zeros((1, 2, 0, 3)), "bones": np.zeros((0, 2), int)}, "K >= 1"),
        ({"bones": [(0, 17)]}, "out of range"),
        ({"bones": [(0.0, 1.0)]}, "integer"),
        ({"bones": [0, 1, 2]}, "bones"),
        ({"out_hw": (0, 4)}, "out_hw"),
        ({"out_hw": 5}, "out_hw"),
        ({"scale": 0.0}, "scale"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": np.nan}, "sigma"),
        ({"paf_width": -0.5}, "paf_width"),
        ({"max_persons": -1}, "max_persons"),
        ({"max_persons": 1.5}, "max_persons"),
        ({"score_threshold": np.nan}, "score_threshold"),
        ({"out": np.zeros((1, 55, 4, 4), np.float64)}, "float32"),
        ({"out": np.zeros((1, 55, 4, 5), np.float32)}, "shape"),
        ({"out": np.zeros((1, 55, 4, 8), np.float32)[..., ::2]}, "contiguous"),
        ({"out": [0.0]}, "numpy array"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {
        "keypoints": np.zeros((1, 2, 17, 3), np.float32),
        "bones": get_layout("coco17").bones,
        "out_hw": (4, 4),
    }
    with pytest.raises(ValueError, match=match):
        render_clip(**{**args, **kwargs})
    with pytest.raises(ValueError, match=match):
        render_clip_reference(**{**args, **kwargs})


def test_read_only_out_is_refused() -> None:
    out = np.zeros((1, 55, 4, 4), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        render_clip(np.zeros((1, 1, 17, 3)), get_layout("coco17").bones, (4, 4), out=out)


def test_gaussian_truncation_is_below_cutoff() -> None:
    # Large sigma: the truncated tail is visible in absolute terms, yet below the cutoff.
    kp = _one_person([(20.0, 20.0)])
    got = render_clip(kp, np.zeros((0, 2), int), (41, 41), sigma=3.0)[0, 0]
    want = render_clip_reference(kp, np.zeros((0, 2), int), (41, 41), sigma=3.0)[0, 0]
    assert np.abs(got - want).max() <= HEATMAP_CUTOFF
    assert got[20, 36] == 0.0 and want[20, 36] > 0.0  # 16 px = 5.3 sigma: cut
    assert got[20, 35] > 0.0  # 15 px = 5 sigma: kept (exp(-12.5) > 1e-6)


# --- Flip ---------------------------------------------------------------------------------------


@st.composite
def flip_cases(draw: st.DrawFn, layout_name: str) -> tuple:
    """Keypoints on a quarter-pixel grid and dyadic scores: every flipped quantity is exact, so
    the flipped raster must match to float rounding, boundary pixels included."""
    layout = get_layout(layout_name)
    scale = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    src_w = draw(st.integers(1, 6)) * 4
    src_h = draw(st.integers(1, 6)) * 4
    frames = draw(st.integers(1, 2))
    persons = draw(st.integers(0, 7))
    shape = (frames, persons, layout.num_joints)
    quarter = st.integers(-8, 4 * src_w + 8).map(lambda v: v / 4)
    x = draw(hnp.arrays(np.float32, shape, elements=quarter | st.just(np.nan)))
    y = draw(
        hnp.arrays(np.float32, shape, elements=st.integers(-8, 4 * src_h + 8).map(lambda v: v / 4))
    )
    s = draw(hnp.arrays(np.float32, shape, elements=st.integers(0, 16).map(lambda v: v / 16)))
    kp = np.stack([x, y, s], axis=-1)
    params = {
        "scale": scale,
        "sigma": draw(st.sampled_from([0.5, 1.0])),
        "paf_width": draw(st.sampled_from([0.5, 1.0, 1.5])),
        "max_persons": draw(st.integers(0, 6)),
    }
    return layout, kp, src_w, (int(src_h * scale), int(src_w * scale)), params


@pytest.mark.parametrize("layout_name", LAYOUT_NAMES)
def test_flip_property(layout_name: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(flip_cases(layout_name))
    def check(case: tuple) -> None:
        layout, kp, src_w, out_hw, params = case
        raster = render_clip(kp, layout.bones, out_hw, **params)
        flipped_kp = flip_keypoints(kp, src_w, layout)
        want = render_clip(flipped_kp, layout.bones, out_hw, **params)
        np.testing.assert_allclose(flip_raster(raster, layout), want, rtol=0, atol=1e-6)

    check()


def test_flip_raster_rule_on_a_shoulder_bone() -> None:
    """coco17 bone (5, 6) left -> right shoulder mirrors to itself with (v_x, -v_y); limb bones
    map to their mirror with (-v_x, v_y)."""
    layout = get_layout("coco17")
    bones = [tuple(b) for b in layout.bones.tolist()]
    shoulders, left_arm, right_arm = bones.index((5, 6)), bones.index((5, 7)), bones.index((6, 8))
    k = layout.num_joints
    idx, sign = layout.channel_flip_index, layout.channel_flip_sign
    assert idx[k + 2 * shoulders] == k + 2 * shoulders
    assert tuple(sign[k + 2 * shoulders : k + 2 * shoulders + 2]) == (1.0, -1.0)
    assert idx[k + 2 * left_arm] == k + 2 * right_arm
    assert tuple(sign[k + 2 * left_arm : k + 2 * left_arm + 2]) == (-1.0, 1.0)
    assert idx[5] == 6 and idx[0] == 0
    # A shoulder line drawn left to right (towards +x): flipped it points to -x, whereas the
    # flipped raster's shoulder bone still runs from the (new) left shoulder... to +x.
    kp = np.zeros((1, 1, 17, 3), np.float32)
    kp[0, 0, 5] = (2.0, 3.0, 1.0)
    kp[0, 0, 6] = (6.0, 4.0, 1.0)
    raster = render_clip(kp, layout.bones, (8, 12))
    got = flip_raster(raster, layout)
    want = render_clip(flip_keypoints(kp, 12, layout), layout.bones, (8, 12))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert want[0, k + 2 * shoulders].max() > 0  # the bone is really there


@pytest.mark.parametrize("layout_name", LAYOUT_NAMES)
def test_flip_raster_is_an_involution(layout_name: str) -> None:
    layout = get_layout(layout_name)
    raster = np.random.default_rng(1).normal(size=(2, layout.num_channels, 5, 7))
    raster = raster.astype(np.float32)
    np.testing.assert_array_equal(flip_raster(flip_raster(raster, layout), layout), raster)
    assert flip_raster(raster[0], layout).shape == raster[0].shape  # [C, H, W] works too
    with pytest.raises(ValueError, match="channels|\\["):
        flip_raster(raster[:, 1:], layout)


# --- Quantisation -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(0, 1, width=32),
    ),
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(-1, 1, width=32),
    ),
)
def test_quantisation_round_trip(heat: np.ndarray, paf: np.ndarray) -> None:
    frames, k, h, w = heat.shape
    paf = np.resize(paf, (frames, 2 * paf.shape[1], h, w)).astype(np.float32)
    raster = np.concatenate([heat, paf], axis=1)
    q_heat, q_paf = quantize_raster(raster, k)
    assert q_heat.dtype == np.uint8 and q_paf.dtype == np.int8
    assert q_heat.shape == heat.shape and q_paf.shape == paf.shape
    back = dequantize_raster(q_heat, q_paf)
    assert back.dtype == np.float32 and back.shape == raster.shape
    assert np.abs(back[:, :k] - heat).max(initial=0) <= 1 / 255
    assert np.abs(back[:, k:] - paf).max(initial=0) <= 1 / 127
    np.testing.assert_array_equal(quantize_raster(back, k)[0], q_heat)  # stable


def test_quantisation_of_a_rendered_clip() -> None:
    layout = get_layout("openpose18")
    rng = np.random.default_rng(2)
    kp = np.concatenate(
        [rng.uniform(0, 60, (3, 4, 18, 2)), rng.uniform(0, 1, (3, 4, 18, 1))], axis=-1
    )
    raster = render_clip(kp, layout.bones, (16, 16), scale=0.25)
    heat, paf = quantize_raster(raster, layout.num_joints)
    assert heat.max() == 255 and paf.min() < 0 < paf.max()
    back = dequantize_raster(heat, paf)
    assert np.abs(back - raster)[:, :18].max() <= 1 / 255
    assert np.abs(back - raster)[:, 18:].max() <= 1 / 127
    # Values outside the range are clipped, not wrapped.
    heat, paf = quantize_raster(np.array([[[[2.0]], [[-3.0]], [[3.0]]]], np.float32), 1)
    assert heat.item() == 255 and paf.ravel().tolist() == [-127, 127]
    with pytest.raises(ValueError):
        quantize_raster(raster, 17)  # 18 + 2B - 17 is odd
    with pytest.raises(ValueError):
        dequantize_raster(heat.astype(np.int8), paf)
