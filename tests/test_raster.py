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
    render_clip_quantized,
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


# --- Quantised kernel ---------------------------------------------------------------------------
# render_clip_quantized must store exactly what quantize_raster(render_clip(...)) stores, so that
# shards built with it are byte-identical to those built before it.


def _quantized_reference(clip: dict) -> tuple[np.ndarray, np.ndarray]:
    raster = render_clip(**clip)
    return quantize_raster(raster, np.asarray(clip["keypoints"]).shape[2])


def _assert_quantized_exact(clip: dict, **buffers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    want_heat, want_paf = _quantized_reference(clip)
    heat, paf = render_clip_quantized(**clip, **buffers)
    assert heat.dtype == np.uint8 and paf.dtype == np.int8
    assert heat.flags.c_contiguous and paf.flags.c_contiguous
    np.testing.assert_array_equal(heat, want_heat, strict=True)
    np.testing.assert_array_equal(paf, want_paf, strict=True)
    return heat, paf


@PROPERTY
@given(clips())
def test_quantized_equals_quantized_float_raster(clip: dict) -> None:
    """Random joints and bones: far, infinite and NaN points, any sizes, scales and widths."""
    _assert_quantized_exact(clip)


@st.composite
def layout_clips(draw: st.DrawFn) -> dict:
    """Crowds of plausible bodies in a real layout, on tiny to large rasters.

    Persons are drawn around a few shared centres so that Gaussians and PAF bands overlap (the
    summed, clamped and averaged pixels); some coordinates sit on the quarter-pixel grid (exact
    ties between bands, quantisation ties such as 0.5 * 127); then joints are knocked out (low
    or non-finite scores, NaN coordinates), thrown off the raster or made to coincide.
    """
    layout = get_layout(draw(st.sampled_from(LAYOUT_NAMES)))
    num_joints = layout.num_joints
    height = draw(st.sampled_from([1, 2, 3]) | st.integers(1, 100))
    width = draw(st.sampled_from([1, 2, 3]) | st.integers(1, 100))
    scale = draw(st.sampled_from([0.25, 0.5, 1.0]) | st.floats(0.1, 2.0))
    frames = draw(st.integers(1, 3))
    persons = draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    src_h, src_w = height / scale, width / scale
    size = draw(st.floats(0.05, 1.5)) * max(src_h, src_w)
    anchors = rng.uniform(-0.2, 1.2, (draw(st.integers(1, 3)), 2)) * (src_w, src_h)
    centre = anchors[rng.integers(0, len(anchors), (frames, persons))]
    xy = centre[:, :, None, :] + rng.normal(0.0, 0.3, (frames, persons, num_joints, 2)) * size
    if draw(st.booleans()):  # on the quarter-pixel grid of the raster
        xy = (np.round(((xy + 0.5) * scale - 0.5) * 4) / 4 + 0.5) / scale - 0.5
    score = rng.uniform(0.0, 1.0, (frames, persons, num_joints))
    kp = np.concatenate([xy, score[..., None]], axis=-1).astype(np.float32)

    def pick(rate: float) -> np.ndarray:
        return rng.random((frames, persons, num_joints)) < rate

    kp[..., 2][pick(draw(st.sampled_from([0.0, 0.1, 0.5])))] = draw(
        st.sampled_from([0.0, 0.05, np.nan, -np.inf])
    )
    kp[..., 0][pick(draw(st.sampled_from([0.0, 0.05])))] = np.nan
    kp[..., 1][pick(draw(st.sampled_from([0.0, 0.05])))] = draw(
        st.sampled_from([-50.0, 1e6, -3e38, np.inf])
    )
    if draw(st.booleans()):  # coincident joints: zero-length bones, stacked Gaussians
        same = pick(0.2)
        kp[..., :2][same] = kp[:, :, :1, :2].repeat(num_joints, axis=2)[same]
    if draw(st.booleans()):  # persons on top of each other
        kp[:, -1] = kp[:, 0]
    return {
        "keypoints": kp,
        "bones": layout.bones,
        "out_hw": (height, width),
        "scale": scale,
        "sigma": draw(st.sampled_from([0.5, 1.0]) | st.floats(0.3, 3.0)),
        "paf_width": draw(st.sampled_from([1.0, 0.0]) | st.floats(0.0, 3.0)),
        "max_persons": draw(st.sampled_from([5]) | st.integers(0, 7)),
        "score_threshold": draw(st.sampled_from([0.1]) | st.floats(0.0, 0.6)),
    }


@settings(PROPERTY, max_examples=300)
@given(layout_clips())
def test_quantized_equals_quantized_float_raster_on_layouts(clip: dict) -> None:
    _assert_quantized_exact(clip)


def test_quantized_in_threads() -> None:
    """The kernel releases the GIL: concurrent calls into their own buffers do not interfere."""
    layout = get_layout("ntu25")
    rng = np.random.default_rng(3)
    clips = []
    for seed in range(6):
        kp = np.concatenate(
            [rng.uniform(0, 80, (4, 3, 25, 2)), rng.uniform(0, 1, (4, 3, 25, 1))], axis=-1
        )
        clips.append({"keypoints": kp, "bones": layout.bones, "out_hw": (20 + seed, 24)})
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda clip: render_clip_quantized(**clip, scale=0.25), clips))
    for clip, (heat, paf) in zip(clips, results, strict=True):
        want_heat, want_paf = _quantized_reference({**clip, "scale": 0.25})
        np.testing.assert_array_equal(heat, want_heat)
        np.testing.assert_array_equal(paf, want_paf)
        assert heat.any() and paf.any()


@settings(max_examples=40, deadline=None)
@given(clips(), st.integers(0, 255), st.integers(0, 3))
def test_quantized_buffers_are_zeroed_and_reused(clip: dict, dirt: int, spare: int) -> None:
    fresh_heat, fresh_paf = _quantized_reference(clip)
    frames = len(fresh_heat)
    # Slices of larger buffers, as a build reusing one buffer across clips passes them.
    heat_buffer = np.full((frames + spare,) + fresh_heat.shape[1:], dirt, np.uint8)
    paf_buffer = np.full((frames + spare,) + fresh_paf.shape[1:], dirt - 128, np.int8)
    heat_view, paf_view = heat_buffer[:frames], paf_buffer[:frames]
    heat, paf = _assert_quantized_exact(clip, heatmaps=heat_view, pafs=paf_view)
    assert heat is heat_view and paf is paf_view
    assert (heat_buffer[frames:] == dirt).all() and (paf_buffer[frames:] == dirt - 128).all()
    # Only one buffer given: the other is allocated.
    _, own_paf = render_clip_quantized(**clip, heatmaps=heat)
    assert not np.shares_memory(own_paf, paf_buffer)
    np.testing.assert_array_equal(own_paf, fresh_paf)


def _kp(*persons: list[tuple[float, float, float]]) -> np.ndarray:
    """One frame: persons given as lists of (x, y, score) per joint."""
    return np.array([persons], dtype=np.float32)


_NO_BONES = np.zeros((0, 2), int)
EDGE_CASES = {
    "gaussian peak": {"keypoints": _kp([(10, 6, 1)]), "bones": _NO_BONES, "out_hw": (16, 20)},
    "quarter scale": {
        "keypoints": _kp([(13.5, 9.5, 1)]), "bones": _NO_BONES, "out_hw": (8, 8), "scale": 0.25
    },
    "between pixels": {
        "keypoints": _kp([(13.5, 9.5, 1)]), "bones": _NO_BONES, "out_hw": (24, 32), "scale": 2.0
    },
    "clamped sum": {"keypoints": _kp([(5, 5, 1)], [(6, 5, 1)]), "bones": _NO_BONES,
                    "out_hw": (10, 12)},
    "stacked persons": {"keypoints": _kp(*[[(4.3, 4.6, 1)]] * 6), "bones": _NO_BONES,
                        "out_hw": (9, 9), "sigma": 2.0},
    "horizontal bone": {"keypoints": _kp([(2, 5, 1), (9, 5, 1)]), "bones": [(0, 1), (1, 0)],
                        "out_hw": (12, 14)},
    "diagonal bone": {"keypoints": _kp([(1, 1, 1), (7, 7, 1)]), "bones": [(0, 1)],
                      "out_hw": (10, 10)},
    "crossing bones": {"keypoints": _kp([(1, 4, 1), (8, 4, 1)], [(4, 1, 1), (4, 8, 1)]),
                       "bones": [(0, 1)], "out_hw": (10, 10), "paf_width": 0.5},
    "crossing bones, one leftwards": {
        "keypoints": _kp([(8, 4, 1), (1, 4, 1)], [(4, 1, 1), (4, 8, 1)]), "bones": [(0, 1)],
        "out_hw": (10, 10), "paf_width": 0.5,
    },
    "three crossing bones": {
        "keypoints": _kp([(1, 4, 1), (8, 4, 1)], [(4, 1, 1), (4, 8, 1)], [(1, 1, 1), (7, 7, 1)]),
        "bones": [(0, 1)], "out_hw": (10, 10), "paf_width": 1.5,
    },
    "far segment": {"keypoints": _kp([(-1e6, 3, 1), (1e6, 3, 1)]), "bones": [(0, 1)],
                    "out_hw": (8, 6)},
    "far crossing segments": {
        "keypoints": _kp([(-1e8, 3, 1), (1e8, 4, 1)], [(2, -1e8, 1), (3, 1e8, 1)]),
        "bones": [(0, 1)], "out_hw": (8, 6),
    },
    "thresholds": {
        "keypoints": _kp([(3, 3, 0.0999), (6, 3, 0.1)], [(np.nan, 3, 1), (6, 5, np.nan)]),
        "bones": [(0, 1)], "out_hw": (8, 8),
    },
    "zero-length bones": {"keypoints": _kp([(3, 3, 1), (3, 3, 1)]), "bones": [(0, 1), (1, 1)],
                          "out_hw": (8, 8)},
    "large sigma truncation": {"keypoints": _kp([(20, 20, 1)]), "bones": _NO_BONES,
                               "out_hw": (41, 41), "sigma": 3.0},
    "one pixel": {"keypoints": _kp([(0, 0, 1), (0.4, 0.3, 1)], [(0.2, 0, 1), (0, 0, 1)]),
                  "bones": [(0, 1)], "out_hw": (1, 1)},
    "no frames": {"keypoints": np.zeros((0, 3, 17, 3)), "bones": get_layout("coco17").bones,
                  "out_hw": (5, 7)},
    "no persons": {"keypoints": np.zeros((4, 0, 17, 3)), "bones": get_layout("coco17").bones,
                   "out_hw": (5, 7)},
    "none kept": {"keypoints": np.ones((4, 2, 17, 3)), "bones": get_layout("coco17").bones,
                  "out_hw": (5, 7), "max_persons": 0},
}  # fmt: skip


@pytest.mark.parametrize("name", EDGE_CASES)
def test_quantized_edge_cases(name: str) -> None:
    _assert_quantized_exact(EDGE_CASES[name])


def test_quantized_hand_values() -> None:
    """Values worked out by hand, ties included (np.rint rounds half to even)."""
    heat, paf = render_clip_quantized(**EDGE_CASES["crossing bones"])
    assert paf[0, :, 4, 4].tolist() == [64, 64]  # (0.5, 0.5): rint(63.5) = 64
    assert paf[0, :, 4, 6].tolist() == [127, 0] and paf[0, :, 6, 4].tolist() == [0, 127]
    assert heat[0, 0, 4, 1] == 255 and heat[0, 0, 4, 2] == round(255 * math.exp(-2))
    _, paf = render_clip_quantized(**EDGE_CASES["crossing bones, one leftwards"])
    assert paf[0, :, 4, 4].tolist() == [-64, 64]  # rint(-63.5) = -64, not -63 (half up)
    heat, _ = render_clip_quantized(**EDGE_CASES["clamped sum"])
    assert heat[0, 0, 5, 5] == heat[0, 0, 5, 6] == 255  # 1 + exp(-2), clamped at 1
    assert heat[0, 0, 4, 5] == round(255 * (math.exp(-2) + math.exp(-4)))
    heat, paf = render_clip_quantized(**EDGE_CASES["zero-length bones"])
    assert heat[0, :, 3, 3].tolist() == [255, 255] and not paf.any()


def _float32_around(centres: np.ndarray, ulps: int) -> np.ndarray:
    """Every float32 within ``ulps`` steps of each centre."""
    values = np.asarray(centres, np.float32)
    below, above = [values], [values]
    for _ in range(ulps):
        below.append(np.nextafter(below[-1], np.float32(-np.inf)))
        above.append(np.nextafter(above[-1], np.float32(np.inf)))
    return np.unique(np.concatenate(below + above))


def test_scalar_quantisers_round_like_numpy() -> None:
    """The kernel's per-value quantisers against quantize_raster at every rounding boundary:
    all float32 within 64 ulps of (k + 1/2) / 255 and (k + 1/2) / 127, ties included, and
    out-of-range values."""
    from pipeline.raster import _quantize_heat, _quantize_paf

    extremes = [0.0, -0.0, 1.0, -1.0, 1.5, -1.5, 3e38, -3e38, 1e-45]
    heat = _float32_around(np.r_[(np.arange(-1, 256) + 0.5) / 255, extremes], 64)
    paf = _float32_around(np.r_[(np.arange(-128, 128) + 0.5) / 127, extremes], 64)
    paf = np.r_[paf, np.float32(0.0)] if len(paf) % 2 else paf  # PAFs come in pairs
    with np.errstate(over="ignore"):  # 3e38 * 255 is inf in float32, clipped to 255
        want_heat, _ = quantize_raster(heat.reshape(-1, 1, 1, 1), 1)
        _, want_paf = quantize_raster(paf.reshape(-1, 2, 1, 1), 0)
    got_heat = np.array([_quantize_heat(v) for v in heat], np.uint8)
    got_paf = np.array([_quantize_paf(v) for v in paf], np.int8)
    np.testing.assert_array_equal(got_heat, want_heat.ravel())
    np.testing.assert_array_equal(got_paf, want_paf.ravel())
    # Ties really occur among them, and round to even.
    inside = heat[(heat >= 0) & (heat <= 1)]
    tie = (inside * np.float32(255)) % 1 == 0.5
    assert tie.sum() > 100
    assert (got_heat[np.isin(heat, inside[tie])] % 2 == 0).all()


@pytest.mark.parametrize(
    "buffers, match",
    [
        ({"heatmaps": np.zeros((1, 17, 4, 4), np.float32)}, "heatmaps must be uint8"),
        ({"heatmaps": np.zeros((1, 17, 4, 5), np.uint8)}, "heatmaps must have shape"),
        ({"heatmaps": np.zeros((1, 17, 4, 8), np.uint8)[..., ::2]}, "C-contiguous"),
        ({"pafs": np.zeros((1, 38, 4, 4), np.uint8)}, "pafs must be int8"),
        ({"pafs": np.zeros((2, 38, 4, 4), np.int8)}, "pafs must have shape"),
        ({"pafs": [0]}, "numpy array"),
    ],
)
def test_quantized_bad_buffers(buffers: dict, match: str) -> None:
    args = {
        "keypoints": np.zeros((1, 2, 17, 3), np.float32),
        "bones": get_layout("coco17").bones,
        "out_hw": (4, 4),
    }
    with pytest.raises(ValueError, match=match):
        render_clip_quantized(**args, **buffers)
    with pytest.raises(ValueError, match="out_hw"):
        render_clip_quantized(**{**args, "out_hw": (0, 4)})
    read_only = np.zeros((1, 17, 4, 4), np.uint8)
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        render_clip_quantized(**args, heatmaps=read_only)
    shared = np.zeros(55 * 16, np.int8)  # heatmaps and PAFs overlapping in one buffer
    with pytest.raises(ValueError, match="share memory"):
        render_clip_quantized(
            **args,
            heatmaps=shared.view(np.uint8)[: 17 * 16].reshape(1, 17, 4, 4),
            pafs=shared[: 38 * 16].reshape(1, 38, 4, 4),
        )
