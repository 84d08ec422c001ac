"""Heatmap and PAF rasters from keypoints: numba kernels (paper section 3.2).

A raster has K + 2B channels: one Gaussian heatmap per joint, then an (x, y) part affinity field
per directed bone. The formulas are in docs/design.md, "Pose and rasters";
:mod:`pipeline.raster_reference` is a plain numpy transcription of them that the kernels are
tested against.

Conventions (shared with the reference):

- A source point x maps to raster x_r = (x + 0.5) * scale - 0.5 (pixel centres at integers).
- Per frame, persons are ranked by mean keypoint score (non-finite scores count as 0; ties keep
  the input order) and the first ``max_persons`` are kept. A keypoint whose x, y or score is not
  finite, or whose score is below ``score_threshold``, contributes nothing.
- Heatmap k is exp(-d^2 / (2 sigma^2)) summed over persons and clamped to 1. The kernel only
  evaluates it where |x - x_k| and |y - y_k| are both at most ``sigma * sqrt(2 ln 1e6)``: every
  value it leaves out is below 1e-6 of the peak.
- PAF of bone (a, c): at every pixel p with 0 <= (p - a).(c - a) <= |c - a|^2 and
  ((p - a) x (c - a))^2 <= paf_width^2 |c - a|^2 (the projection falls on the segment and the
  distance to the line is at most ``paf_width``), the unit vector (c - a) / |c - a| is written;
  vectors of several persons on one pixel are averaged. A bone whose end points coincide is
  skipped. The tests are evaluated in float64 with the same operations as the reference, so the
  two agree on every boundary pixel.

Keypoints are read as float32 (the stored dtype); the geometry runs in float64, the output is
float32.

Two renderers share that code: :func:`render_clip` (float32 [F, K + 2B, H, W]; training renders
from augmented keypoints with it) and :func:`render_clip_quantized` (what shards store: uint8
heatmaps round(255 H) and int8 PAFs round(127 P), equal value for value to
``quantize_raster(render_clip(...))``). The latter writes the quantised value only on the pixels
of a Gaussian's cutoff box or a PAF segment's band; where several persons' boxes overlap it sums
in small float32 scratch planes exactly as the float kernel does, then quantises those pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from pipeline.skeletons import Layout, get_layout

__all__ = [
    "render_clip",
    "render_clip_quantized",
    "quantize_raster",
    "dequantize_raster",
    "flip_raster",
    "HEATMAP_CUTOFF",
]

# Every kernel: cached on disk, releases the GIL (callers may render clips in threads), and
# numpy's float error model (no ZeroDivisionError branch on each division; every divisor here
# is checked non-zero first).
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

# Heatmap values below this fraction of the peak are not written (see the module docstring).
HEATMAP_CUTOFF = 1e-6
# Beyond this coordinate magnitude (raster pixels) a PAF segment is tested at every pixel of the
# image: float64 rounding of the per-pixel test could then reach past its bounding box.
_NARROW_LIMIT = 1e7
# Name of LLVM's prefetch intrinsic: overloaded on the pointer type, which is opaque ("p0")
# from LLVM 17 on and i8* ("p0i8") before.
_PREFETCH = "llvm.prefetch.p0" if llvm_binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


def _normalize_args(
    keypoints: np.ndarray,
    bones: np.ndarray | Sequence[Sequence[int]],
    out_hw: tuple[int, int],
    scale: float,
    sigma: float,
    paf_width: float,
    max_persons: int,
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate the arguments shared by the kernel and the reference.

    Returns keypoints as C-contiguous float32 [F, P, K, 3], bones as int64 [B, 2], H and W.
    """
    kp = np.ascontiguousarray(keypoints, dtype=np.float32)
    if kp.ndim != 4 or kp.shape[-1] != 3 or kp.shape[2] == 0:
        raise ValueError(
            f"keypoints must be [F, P, K, 3] (x, y, score) with K >= 1; got shape {kp.shape}"
        )
    k = kp.shape[2]
    bone_arr = np.asarray(bones)
    if bone_arr.size == 0:
        bone_arr = np.zeros((0, 2), dtype=np.int64)
    if bone_arr.ndim != 2 or bone_arr.shape[1] != 2:
        raise ValueError(f"bones must be [B, 2] joint index pairs; got shape {bone_arr.shape}")
    if not np.issubdtype(bone_arr.dtype, np.integer):
        raise ValueError(f"bones must be integer joint indices; got dtype {bone_arr.dtype}")
    bone_arr = np.ascontiguousarray(bone_arr, dtype=np.int64)
    # Read-only arrays (a layout's bones are) would make numba compile and cache a second copy
    # of every kernel; copies of these small arrays keep one signature.
    if not kp.flags.writeable:
        kp = kp.copy()
    if not bone_arr.flags.writeable:
        bone_arr = bone_arr.copy()
    if bone_arr.size and (bone_arr.min() < 0 or bone_arr.max() >= k):
        raise ValueError(f"bone joint index out of range for {k} joints")
    try:
        h, w = (int(v) for v in out_hw)
    except (TypeError, ValueError):
        raise ValueError(f"out_hw must be (height, width); got {out_hw!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"out_hw must be positive; got {(h, w)}")
    for name, value in (("scale", scale), ("sigma", sigma)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    if not (math.isfinite(paf_width) and paf_width >= 0):
        raise ValueError(f"paf_width must be a non-negative finite number; got {paf_width!r}")
    if not math.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be finite; got {score_threshold!r}")
    if int(max_persons) != max_persons or max_persons < 0:
        raise ValueError(f"max_persons must be a non-negative integer; got {max_persons!r}")
    return kp, bone_arr, h, w


def _check_out(
    out: np.ndarray,
    shape: tuple[int, ...],
    dtype: type = np.float32,
    name: str = "out",
    dims: str = "[F, K + 2B, H, W]",
) -> None:
    """``out`` must be a writeable C-contiguous array of ``dtype`` and exactly ``shape``."""
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{name} must be a numpy array; got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}; got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape} {dims}; got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")


@intrinsic
def _prefetch_write(typingctx, plane, row, col):
    """Hint the CPU to fetch the cache line of ``plane[row, col]`` for writing; no effect on
    results.

    Why: the output is zeroed first by one large memset, which streams past the caches, so each
    line that a Gaussian or segment then touches is a cache miss, and the read-modify-write
    waits for it. Fetching the next frame's lines while the current frame is drawn overlaps
    those misses with work (up to about 20 % faster on a 38 MB clip here; the shared test
    machine made it hard to measure finer). numba has no prefetch, hence this LLVM intrinsic.
    """
    if not (isinstance(plane, types.Array) and plane.ndim == 2):
        return None
    sig = types.void(plane, row, col)

    def codegen(context, builder, signature, args):
        plane_ty = signature.args[0]
        array = context.make_array(plane_ty)(context, builder, args[0])
        index = [
            context.cast(builder, args[1], signature.args[1], types.intp),
            context.cast(builder, args[2], signature.args[2], types.intp),
        ]
        ptr = cgutils.get_item_pointer(context, builder, plane_ty, array, index)
        i8_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [i8_ptr, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, _PREFETCH)
        # (address, write, locality 3 = keep in all cache levels, data cache)
        builder.call(fn, [builder.bitcast(ptr, i8_ptr), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@_jit
def _prefetch_box(plane: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> None:
    """Prefetch the cache lines of ``plane[y0:y1 + 1, x0:x1 + 1]`` (an empty box is a no-op)."""
    if x1 < x0:
        return
    for py in range(y0, y1 + 1):
        # 16 float32 per 64-byte line; the last column covers a line the stride may skip.
        for px in range(x0, x1 + 1, 16):
            _prefetch_write(plane, py, px)
        _prefetch_write(plane, py, x1)


@_jit
def _quantize_heat(value: float) -> int:
    """round(255 v) clipped to [0, 255], as uint8: :func:`quantize_raster` on one float32 value.

    The product is a float32 one (numpy multiplies a float32 array by a Python float in float32)
    and np.rint rounds half to even, as numpy's does.
    """
    q = np.rint(np.float32(value) * np.float32(255.0))
    return np.uint8(min(max(q, np.float32(0.0)), np.float32(255.0)))


@_jit
def _quantize_paf(value: float) -> int:
    """round(127 v) clipped to [-127, 127], as int8: :func:`quantize_raster` on one value."""
    q = np.rint(np.float32(value) * np.float32(127.0))
    return np.int8(min(max(q, np.float32(-127.0)), np.float32(127.0)))


def _paf_stored(plane: np.ndarray, value: float) -> float:
    """What ``plane`` stores for the float32 PAF component ``value``: the value itself in a
    float32 plane, :func:`_quantize_paf` of it in an int8 plane. Chosen by numba from the plane's
    dtype when compiling (see the overload below), so the PAF drawing code serves both kernels;
    not callable from Python."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_paf_stored)
def _paf_stored_overload(plane, value):  # unannotated: numba compares signatures with the lambdas
    if isinstance(plane, types.Array) and plane.dtype == types.int8:
        return lambda plane, value: _quantize_paf(value)
    if isinstance(plane, types.Array) and plane.dtype == types.float32:
        return lambda plane, value: np.float32(value)
    return None


@_jit
def _rank_persons(kp_frame: np.ndarray, order: np.ndarray) -> None:
    """Fill ``order`` with person indices by decreasing mean score, ties in input order.

    The mean is a sequential float64 sum over all K joints divided by K, exactly as in the
    reference, so that near ties rank the same way in both.
    """
    num_persons, num_joints = kp_frame.shape[0], kp_frame.shape[1]
    means = np.empty(num_persons)
    for p in range(num_persons):
        total = 0.0
        for j in range(num_joints):
            s = np.float64(kp_frame[p, j, 2])
            if np.isfinite(s):
                total += s
        means[p] = total / num_joints
    # Insertion sort: stable, and P is small (a handful of persons).
    for i in range(num_persons):
        order[i] = i
    for i in range(1, num_persons):
        cur = order[i]
        m = means[cur]
        j = i - 1
        while j >= 0 and means[order[j]] < m:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = cur


@_jit
def _gaussian_box(
    x: float, y: float, radius: float, height: int, width: int
) -> tuple[int, int, int, int]:
    """Pixel box (x0, x1, y0, y1), inclusive, within ``radius`` of (x, y); x1 < x0 if empty."""
    # np.floor/np.ceil stay float: math.ceil returns int64, which overflows for far points.
    x0f = np.ceil(x - radius)
    x1f = np.floor(x + radius)
    y0f = np.ceil(y - radius)
    y1f = np.floor(y + radius)
    if x1f < 0 or y1f < 0 or x0f > width - 1 or y0f > height - 1 or x1f < x0f or y1f < y0f:
        return 0, -1, 0, -1
    return (
        int(max(x0f, 0.0)),
        int(min(x1f, width - 1.0)),
        int(max(y0f, 0.0)),
        int(min(y1f, height - 1.0)),
    )


@_jit
def _gaussian_1d(values: np.ndarray, first: int, last: int, centre: float, c: float) -> None:
    """values[i] = exp(-(first + i - centre)^2 c) for first + i in [first, last].

    By the recurrence g(d + 1) = g(d) r(d), r(d) = exp(-(2d + 1) c), r(d + 1) = r(d) exp(-2c):
    three exp calls per axis instead of one per pixel (exp dominated the splat's cost). Within
    the cutoff radius r stays below e^14 and g above 1e-6, so nothing overflows or underflows;
    the relative error grows by about one ulp per step.
    """
    d = first - centre
    g = math.exp(-d * d * c)
    r = math.exp(-(2.0 * d + 1.0) * c)
    q = math.exp(-2.0 * c)
    for i in range(last - first + 1):
        values[i] = g
        g *= r
        r *= q


@_jit
def _splat_gaussian(
    plane: np.ndarray,
    x: float,
    y: float,
    inv_two_sigma2: float,
    radius: float,
    gx: np.ndarray,
    gy: np.ndarray,
) -> None:
    """Add one Gaussian to ``plane`` [H, W], clamping at 1, within ``radius`` of (x, y)."""
    x0, x1, y0, y1 = _gaussian_box(x, y, radius, plane.shape[0], plane.shape[1])
    if x1 < x0:
        return
    # Separable: exp(-(dx^2 + dy^2) c) = exp(-dx^2 c) exp(-dy^2 c).
    _gaussian_1d(gx, x0, x1, x, inv_two_sigma2)
    _gaussian_1d(gy, y0, y1, y, inv_two_sigma2)
    for py in range(y0, y1 + 1):
        row = plane[py]
        g = gy[py - y0]
        for px in range(x0, x1 + 1):
            # Clamping after every addition equals clamping the sum (all terms are >= 0).
            v = row[px] + np.float32(g * gx[px - x0])
            row[px] = v if v < 1.0 else np.float32(1.0)


@_jit
def _splat_gaussian_quantized(
    plane: np.ndarray,
    x: float,
    y: float,
    inv_two_sigma2: float,
    radius: float,
    gx: np.ndarray,
    gy: np.ndarray,
) -> None:
    """Write one Gaussian, quantised, into the uint8 ``plane`` [H, W] within ``radius`` of (x, y).

    For a Gaussian that no other one overlaps: the float32 value of :func:`_splat_gaussian` on a
    zero plane (the same box, 1-D factors and operations), then :func:`_quantize_heat`.
    """
    x0, x1, y0, y1 = _gaussian_box(x, y, radius, plane.shape[0], plane.shape[1])
    if x1 < x0:
        return
    _gaussian_1d(gx, x0, x1, x, inv_two_sigma2)
    _gaussian_1d(gy, y0, y1, y, inv_two_sigma2)
    for py in range(y0, y1 + 1):
        row = plane[py]
        g = gy[py - y0]
        for px in range(x0, x1 + 1):
            v = np.float32(0.0) + np.float32(g * gx[px - x0])
            row[px] = _quantize_heat(v if v < 1.0 else np.float32(1.0))


@_jit
def _draw_joint_quantized(
    plane: np.ndarray,
    scratch: np.ndarray,
    j: int,
    xs: np.ndarray,
    ys: np.ndarray,
    ok: np.ndarray,
    inv_two_sigma2: float,
    radius: float,
    gx: np.ndarray,
    gy: np.ndarray,
    boxes: np.ndarray,
    drawn: np.ndarray,
    shared: np.ndarray,
) -> None:
    """Heatmap of joint j over all kept persons into the uint8 ``plane``, quantised.

    A Gaussian whose box overlaps no other's is written straight into ``plane``. Overlapping
    ones are summed (and clamped) in the float32 ``scratch`` plane [H, W] in rank order, exactly
    as the float kernel sums them, then their boxes are quantised into ``plane`` and zeroed in
    ``scratch`` again (``scratch`` is all zero between calls).
    """
    height, width = plane.shape
    kept = xs.shape[0]
    for i in range(kept):
        drawn[i] = ok[i, j]
        if drawn[i]:
            x0, x1, y0, y1 = _gaussian_box(xs[i, j], ys[i, j], radius, height, width)
            boxes[i, 0] = x0
            boxes[i, 1] = x1
            boxes[i, 2] = y0
            boxes[i, 3] = y1
            drawn[i] = x0 <= x1
    any_shared = False
    for i in range(kept):
        shared[i] = False
        if not drawn[i]:
            continue
        for i2 in range(kept):
            if (
                i2 != i
                and drawn[i2]
                and boxes[i, 0] <= boxes[i2, 1]
                and boxes[i2, 0] <= boxes[i, 1]
                and boxes[i, 2] <= boxes[i2, 3]
                and boxes[i2, 2] <= boxes[i, 3]
            ):
                shared[i] = True
                any_shared = True
                break
        if shared[i]:
            _splat_gaussian(scratch, xs[i, j], ys[i, j], inv_two_sigma2, radius, gx, gy)
        else:
            _splat_gaussian_quantized(plane, xs[i, j], ys[i, j], inv_two_sigma2, radius, gx, gy)
    if not any_shared:
        return
    # Quantise every shared box before zeroing any: boxes overlap.
    for i in range(kept):
        if shared[i]:
            for py in range(boxes[i, 2], boxes[i, 3] + 1):
                for px in range(boxes[i, 0], boxes[i, 1] + 1):
                    plane[py, px] = _quantize_heat(scratch[py, px])
    for i in range(kept):
        if shared[i]:
            scratch[boxes[i, 2] : boxes[i, 3] + 1, boxes[i, 0] : boxes[i, 1] + 1] = 0.0


@_jit
def _segment_box(
    xa: float,
    ya: float,
    xc: float,
    yc: float,
    width_px: float,
    height: int,
    width: int,
    margin: float = 1.0,
) -> tuple[int, int, int, int]:
    """Pixel box (x0, x1, y0, y1), inclusive, holding a PAF segment; x1 < x0 when empty.

    The segment's bounding box grown by the PAF width and ``margin`` pixels (a safety margin
    against rounding when drawing; 0 for prefetching), clipped to the image. With end points
    beyond ``_NARROW_LIMIT`` pixels, float64 rounding of the per-pixel test can reach further
    than that margin, so the whole image is the box.
    """
    if max(abs(xa), abs(ya), abs(xc), abs(yc)) >= _NARROW_LIMIT:
        return 0, width - 1, 0, height - 1
    x0f = np.ceil(min(xa, xc) - width_px - margin)
    x1f = np.floor(max(xa, xc) + width_px + margin)
    y0f = np.ceil(min(ya, yc) - width_px - margin)
    y1f = np.floor(max(ya, yc) + width_px + margin)
    if x1f < 0 or y1f < 0 or x0f > width - 1 or y0f > height - 1:
        return 0, -1, 0, -1
    return (
        int(max(x0f, 0.0)),
        int(min(x1f, width - 1.0)),
        int(max(y0f, 0.0)),
        int(min(y1f, height - 1.0)),
    )


@_jit
def _draw_segment(
    plane_x: np.ndarray,
    plane_y: np.ndarray,
    count: np.ndarray,
    touched: np.ndarray,
    num_touched: int,
    use_count: bool,
    xa: float,
    ya: float,
    xc: float,
    yc: float,
    paf_width: float,
) -> int:
    """Write the unit vector of segment a -> c on the pixels it covers.

    Without ``use_count`` (a single writer) the vector is stored directly, as
    :func:`_paf_stored` makes it for the planes' dtype (float32, or int8 in the quantised
    kernel). With it, the vector is added and the pixel's cover count incremented; pixels
    counted for the first time are appended (as flat indices) to ``touched``, for the averaging
    pass. Returns the new length of ``touched``. Sums are only ever made in float32 planes.
    """
    height, width = plane_x.shape
    dx = xc - xa
    dy = yc - ya
    len2 = dx * dx + dy * dy
    if not len2 > 0.0:
        return num_touched
    norm = math.sqrt(len2)
    vx = np.float32(dx / norm)
    vy = np.float32(dy / norm)
    stored_x = _paf_stored(plane_x, vx)
    stored_y = _paf_stored(plane_y, vy)
    limit = paf_width * paf_width * len2
    x0, x1, y0, y1 = _segment_box(xa, ya, xc, yc, paf_width, height, width)
    if x1 < x0 or y1 < y0:
        return num_touched
    # Per row, the covered columns lie between two lower and two upper bounds, each linear in
    # ry = py - ya: lo_k + slope_k * ry. Solved in real arithmetic from the two conditions, and
    # widened by far more than float64 rounding can move them (about 8 ulp of the magnitudes
    # involved, times 1 + |slope|), they only narrow the candidates: the exact per-pixel test
    # below, the reference's, decides. Far from the image (_NARROW_LIMIT) nothing is narrowed.
    inf = np.inf
    lo1, hi1, slope1 = -inf, inf, 0.0
    lo2, hi2, slope2 = -inf, inf, 0.0
    size = 1.0 + 4.0 * max(abs(xa), abs(ya), abs(xc), abs(yc), height, width, paf_width)
    if size < _NARROW_LIMIT:
        if dx != 0.0:
            # 0 <= (x - xa) dx + ry dy <= len2
            slope1 = -dy / dx
            end = xa + len2 / dx
            margin = min(1.0, 1e-12 * (1.0 + abs(slope1)) * size)
            lo1, hi1 = (xa, end) if dx > 0.0 else (end, xa)
            lo1 -= margin
            hi1 += margin
        if dy != 0.0:
            # |(x - xa) dy - ry dx| <= paf_width * |c - a|
            slope2 = dx / dy
            half = paf_width * norm / abs(dy)
            margin = min(1.0, 1e-12 * (1.0 + abs(slope2)) * size)
            lo2 = xa - half - margin
            hi2 = xa + half + margin
    box_lo = np.float64(x0)
    box_hi = np.float64(x1)
    for py in range(y0, y1 + 1):
        ry = py - ya
        ry_dy = ry * dy
        ry_dx = ry * dx
        # Rows that a condition rules out whatever the column (exact: rx * 0 == 0).
        if dx == 0.0 and not (0.0 <= ry_dy <= len2):
            continue
        if dy == 0.0 and ry_dx * ry_dx > limit:
            continue
        lo = max(box_lo, np.ceil(max(lo1 + slope1 * ry, lo2 + slope2 * ry)))
        hi = min(box_hi, np.floor(min(hi1 + slope1 * ry, hi2 + slope2 * ry)))
        if not lo <= hi:
            continue
        for px in range(int(lo), int(hi) + 1):
            rx = px - xa
            dot = rx * dx + ry_dy
            if dot < 0.0 or dot > len2:
                continue
            cross = rx * dy - ry_dx
            if cross * cross > limit:
                continue
            if use_count:
                plane_x[py, px] += vx
                plane_y[py, px] += vy
                if count[py, px] == 0:
                    touched[num_touched] = py * width + px
                    num_touched += 1
                count[py, px] += 1
            else:
                plane_x[py, px] = stored_x
                plane_y[py, px] = stored_y
    return num_touched


@_jit
def _average_touched(
    plane_x: np.ndarray,
    plane_y: np.ndarray,
    count: np.ndarray,
    touched: np.ndarray,
    num_touched: int,
) -> None:
    """Divide the summed vectors of the touched pixels by their cover count; reset counts."""
    width = count.shape[1]
    for n in range(num_touched):
        py, px = divmod(touched[n], width)
        c = count[py, px]
        if c > 1:
            plane_x[py, px] /= np.float32(c)
            plane_y[py, px] /= np.float32(c)
        count[py, px] = 0


@_jit
def _average_touched_quantized(
    plane_x: np.ndarray,
    plane_y: np.ndarray,
    sum_x: np.ndarray,
    sum_y: np.ndarray,
    count: np.ndarray,
    touched: np.ndarray,
    num_touched: int,
) -> None:
    """:func:`_average_touched` on the float32 ``sum_x``, ``sum_y``, the result quantised into
    the int8 planes; resets the counts and the sums."""
    width = count.shape[1]
    for n in range(num_touched):
        py, px = divmod(touched[n], width)
        c = count[py, px]
        vx = sum_x[py, px]
        vy = sum_y[py, px]
        if c > 1:
            vx /= np.float32(c)
            vy /= np.float32(c)
        plane_x[py, px] = _quantize_paf(vx)
        plane_y[py, px] = _quantize_paf(vy)
        count[py, px] = 0
        sum_x[py, px] = 0.0
        sum_y[py, px] = 0.0


def _finish_touched(
    plane_x: np.ndarray,
    plane_y: np.ndarray,
    sum_x: np.ndarray,
    sum_y: np.ndarray,
    count: np.ndarray,
    touched: np.ndarray,
    num_touched: int,
) -> None:
    """Average the touched pixels' sums into the planes: in place in float32 planes (the sums
    are the planes), quantised from the scratch sums in int8 planes. Chosen by numba from the
    planes' dtype (overload below); not callable from Python."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_finish_touched)
def _finish_touched_overload(plane_x, plane_y, sum_x, sum_y, count, touched, num_touched):
    if not isinstance(plane_x, types.Array):
        return None
    if plane_x.dtype == types.int8:

        def quantized(plane_x, plane_y, sum_x, sum_y, count, touched, num_touched):
            _average_touched_quantized(plane_x, plane_y, sum_x, sum_y, count, touched, num_touched)

        return quantized
    if plane_x.dtype == types.float32:

        def in_place(plane_x, plane_y, sum_x, sum_y, count, touched, num_touched):
            _average_touched(plane_x, plane_y, count, touched, num_touched)

        return in_place
    return None


@_jit
def _place_persons(
    kp_frame: np.ndarray,
    order: np.ndarray,
    scale: float,
    score_threshold: float,
    xs: np.ndarray,
    ys: np.ndarray,
    ok: np.ndarray,
) -> None:
    """Raster coordinates and usability of the kept persons' keypoints, in rank order."""
    for i in range(xs.shape[0]):
        p = order[i]
        for j in range(xs.shape[1]):
            x = np.float64(kp_frame[p, j, 0])
            y = np.float64(kp_frame[p, j, 1])
            s = np.float64(kp_frame[p, j, 2])
            ok[i, j] = np.isfinite(x) and np.isfinite(y) and np.isfinite(s) and s >= score_threshold
            xs[i, j] = (x + 0.5) * scale - 0.5
            ys[i, j] = (y + 0.5) * scale - 0.5


@_jit
def _draw_bone(
    plane_x: np.ndarray,
    plane_y: np.ndarray,
    sum_x: np.ndarray,
    sum_y: np.ndarray,
    count: np.ndarray,
    touched: np.ndarray,
    a: int,
    c: int,
    xs: np.ndarray,
    ys: np.ndarray,
    ok: np.ndarray,
    paf_width: float,
    boxes: np.ndarray,
    drawn: np.ndarray,
) -> None:
    """The PAF of bone a -> c over all kept persons, averaged where they overlap.

    Where persons overlap, vectors are summed in float32 ``sum_x`` and ``sum_y``: the planes
    themselves (float kernel), or scratch planes that are all zero between calls when the
    planes are int8 (quantised kernel).
    """
    height, width = plane_x.shape
    kept = xs.shape[0]
    for i in range(kept):
        drawn[i] = ok[i, a] and ok[i, c]
        if drawn[i]:
            x0, x1, y0, y1 = _segment_box(
                xs[i, a], ys[i, a], xs[i, c], ys[i, c], paf_width, height, width
            )
            boxes[i, 0] = x0
            boxes[i, 1] = x1
            boxes[i, 2] = y0
            boxes[i, 3] = y1
            drawn[i] = x0 <= x1 and y0 <= y1
    # Averaging needs cover counts only where the boxes of two persons overlap; a person whose
    # box overlaps no other's writes its vectors directly.
    num_touched = 0
    for i in range(kept):
        if not drawn[i]:
            continue
        shared = False
        for i2 in range(kept):
            if (
                i2 != i
                and drawn[i2]
                and boxes[i, 0] <= boxes[i2, 1]
                and boxes[i2, 0] <= boxes[i, 1]
                and boxes[i, 2] <= boxes[i2, 3]
                and boxes[i2, 2] <= boxes[i, 3]
            ):
                shared = True
                break
        if shared:
            num_touched = _draw_segment(
                sum_x, sum_y, count, touched, num_touched, True,
                xs[i, a], ys[i, a], xs[i, c], ys[i, c], paf_width,
            )  # fmt: skip
        else:
            num_touched = _draw_segment(
                plane_x, plane_y, count, touched, num_touched, False,
                xs[i, a], ys[i, a], xs[i, c], ys[i, c], paf_width,
            )  # fmt: skip
    if num_touched:
        _finish_touched(plane_x, plane_y, sum_x, sum_y, count, touched, num_touched)


@_jit
def _prefetch_joint(
    plane: np.ndarray, j: int, xs: np.ndarray, ys: np.ndarray, ok: np.ndarray, radius: float
) -> None:
    """Prefetch the lines of heatmap ``plane`` that joint j's Gaussians will touch."""
    height, width = plane.shape
    for i in range(xs.shape[0]):
        if ok[i, j]:
            x0, x1, y0, y1 = _gaussian_box(xs[i, j], ys[i, j], radius, height, width)
            _prefetch_box(plane, x0, x1, y0, y1)


@_jit
def _prefetch_bone(
    plane_x: np.ndarray,
    plane_y: np.ndarray,
    a: int,
    c: int,
    xs: np.ndarray,
    ys: np.ndarray,
    ok: np.ndarray,
    paf_width: float,
) -> None:
    """Prefetch the lines of a bone's two PAF planes that its segments will touch."""
    height, width = plane_x.shape
    for i in range(xs.shape[0]):
        if ok[i, a] and ok[i, c]:
            x0, x1, y0, y1 = _segment_box(
                xs[i, a], ys[i, a], xs[i, c], ys[i, c], paf_width, height, width, 0.0
            )
            _prefetch_box(plane_x, x0, x1, y0, y1)
            _prefetch_box(plane_y, x0, x1, y0, y1)


@_jit
def _render_clip_kernel(
    kp: np.ndarray,
    bones: np.ndarray,
    scale: float,
    sigma: float,
    paf_width: float,
    max_persons: int,
    score_threshold: float,
    out: np.ndarray,
) -> None:
    """Render a whole clip into ``out`` [F, K + 2B, H, W] (zeroed here first)."""
    num_frames, num_persons, num_joints = kp.shape[0], kp.shape[1], kp.shape[2]
    num_bones = bones.shape[0]
    kept = min(num_persons, max_persons)
    inv_two_sigma2 = 1.0 / (2.0 * sigma * sigma)
    radius = sigma * math.sqrt(-2.0 * math.log(HEATMAP_CUTOFF))
    # One memset over the whole array: for large arrays glibc uses streaming stores, the fastest
    # way to write memory; zeroing frame by frame or plane by plane just before drawing (to keep
    # the lines in cache) measured about 3x slower, as each smaller memset reads every line
    # before overwriting it.
    out[...] = 0.0
    if kept == 0 or num_frames == 0:
        return
    order = np.empty(num_persons, dtype=np.int64)
    # Two sets of placed persons: the frame being drawn and the next one, being prefetched.
    xs = np.empty((2, kept, num_joints))
    ys = np.empty((2, kept, num_joints))
    ok = np.empty((2, kept, num_joints), dtype=np.bool_)
    gx = np.empty(int(2.0 * radius) + 2)
    gy = np.empty_like(gx)
    count = np.zeros((out.shape[2], out.shape[3]), dtype=np.int32)
    touched = np.empty(out.shape[2] * out.shape[3], dtype=np.int64)
    boxes = np.empty((kept, 4), dtype=np.int64)
    drawn = np.empty(kept, dtype=np.bool_)
    _rank_persons(kp[0], order)
    _place_persons(kp[0], order, scale, score_threshold, xs[0], ys[0], ok[0])
    for j in range(num_joints):
        _prefetch_joint(out[0, j], j, xs[0], ys[0], ok[0], radius)
    for b in range(num_bones):
        plane_x, plane_y = out[0, num_joints + 2 * b], out[0, num_joints + 2 * b + 1]
        _prefetch_bone(plane_x, plane_y, bones[b, 0], bones[b, 1], xs[0], ys[0], ok[0], paf_width)
    for f in range(num_frames):
        cur, nxt = f % 2, 1 - f % 2
        ahead = f + 1 < num_frames
        if ahead:
            _rank_persons(kp[f + 1], order)
            _place_persons(kp[f + 1], order, scale, score_threshold, xs[nxt], ys[nxt], ok[nxt])
        frame = out[f]
        # The next frame's lines are prefetched plane by plane, interleaved with drawing this
        # frame, so the misses overlap with computation instead of stalling in one burst.
        following = out[f + 1] if ahead else frame
        for j in range(num_joints):
            plane = frame[j]
            for i in range(kept):
                if ok[cur, i, j]:
                    x, y = xs[cur, i, j], ys[cur, i, j]
                    _splat_gaussian(plane, x, y, inv_two_sigma2, radius, gx, gy)
            if ahead:
                _prefetch_joint(following[j], j, xs[nxt], ys[nxt], ok[nxt], radius)
        for b in range(num_bones):
            a, c = bones[b, 0], bones[b, 1]
            ch = num_joints + 2 * b
            plane_x, plane_y = frame[ch], frame[ch + 1]
            _draw_bone(
                plane_x, plane_y, plane_x, plane_y, count, touched, a, c, xs[cur], ys[cur],
                ok[cur], paf_width, boxes, drawn,
            )  # fmt: skip
            if ahead:
                _prefetch_bone(
                    following[ch], following[ch + 1], a, c, xs[nxt], ys[nxt], ok[nxt], paf_width
                )


@_jit
def _render_clip_quantized_kernel(
    kp: np.ndarray,
    bones: np.ndarray,
    scale: float,
    sigma: float,
    paf_width: float,
    max_persons: int,
    score_threshold: float,
    heatmaps: np.ndarray,
    pafs: np.ndarray,
) -> None:
    """Render a clip into uint8 ``heatmaps`` [F, K, H, W] and int8 ``pafs`` [F, 2B, H, W]
    (zeroed here first): :func:`quantize_raster` of what :func:`_render_clip_kernel` renders."""
    num_frames, num_persons, num_joints = kp.shape[0], kp.shape[1], kp.shape[2]
    num_bones = bones.shape[0]
    kept = min(num_persons, max_persons)
    inv_two_sigma2 = 1.0 / (2.0 * sigma * sigma)
    radius = sigma * math.sqrt(-2.0 * math.log(HEATMAP_CUTOFF))
    # A quarter of the float raster's bytes to zero; pixels never drawn quantise to 0.
    heatmaps[...] = 0
    pafs[...] = 0
    if kept == 0 or num_frames == 0:
        return
    height, width = heatmaps.shape[2], heatmaps.shape[3]
    order = np.empty(num_persons, dtype=np.int64)
    xs = np.empty((kept, num_joints))
    ys = np.empty((kept, num_joints))
    ok = np.empty((kept, num_joints), dtype=np.bool_)
    gx = np.empty(int(2.0 * radius) + 2)
    gy = np.empty_like(gx)
    # float32 planes [H, W] for the pixels that several persons cover: the float kernel's sums
    # there, exactly, before quantising. All zero between planes.
    scratch = np.zeros((height, width), dtype=np.float32)
    sum_x = np.zeros((height, width), dtype=np.float32)
    sum_y = np.zeros((height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.int32)
    touched = np.empty(height * width, dtype=np.int64)
    boxes = np.empty((kept, 4), dtype=np.int64)
    drawn = np.empty(kept, dtype=np.bool_)
    shared = np.empty(kept, dtype=np.bool_)
    for f in range(num_frames):
        _rank_persons(kp[f], order)
        _place_persons(kp[f], order, scale, score_threshold, xs, ys, ok)
        for j in range(num_joints):
            _draw_joint_quantized(
                heatmaps[f, j], scratch, j, xs, ys, ok, inv_two_sigma2, radius, gx, gy, boxes,
                drawn, shared,
            )  # fmt: skip
        for b in range(num_bones):
            _draw_bone(
                pafs[f, 2 * b], pafs[f, 2 * b + 1], sum_x, sum_y, count, touched, bones[b, 0],
                bones[b, 1], xs, ys, ok, paf_width, boxes, drawn,
            )  # fmt: skip


def render_clip(
    keypoints: np.ndarray,
    bones: np.ndarray | Sequence[Sequence[int]],
    out_hw: tuple[int, int],
    scale: float = 1.0,
    sigma: float = 0.5,
    paf_width: float = 1.0,
    max_persons: int = 5,
    score_threshold: float = 0.1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Render heatmaps and PAFs of a clip: float32 [F, K + 2B, H, W].

    Args:
        keypoints: [F, P, K, 3] (x, y, score) in source pixels (read as float32).
        bones: [B, 2] directed (first, second) joint index pairs, e.g.
            ``get_layout("coco17").bones``.
        out_hw: raster (height, width).
        scale: raster pixels per source pixel; x_r = (x + 0.5) * scale - 0.5.
        sigma: heatmap Gaussian standard deviation, in raster pixels.
        paf_width: largest distance of a PAF pixel from its bone's line, in raster pixels.
        max_persons: persons kept per frame, highest mean score first.
        score_threshold: keypoints scoring below it are left out.
        out: optional preallocated C-contiguous float32 [F, K + 2B, H, W]; zeroed, then
            written and returned.
    """
    kp, bone_arr, h, w = _normalize_args(
        keypoints, bones, out_hw, scale, sigma, paf_width, max_persons, score_threshold
    )
    shape = (kp.shape[0], kp.shape[2] + 2 * bone_arr.shape[0], h, w)
    if out is None:
        # The kernel zeroes the whole array first, so uninitialised memory is fine.
        out = np.empty(shape, dtype=np.float32)
    else:
        _check_out(out, shape)
    _render_clip_kernel(
        kp,
        bone_arr,
        float(scale),
        float(sigma),
        float(paf_width),
        int(max_persons),
        float(score_threshold),
        out,
    )
    return out


def render_clip_quantized(
    keypoints: np.ndarray,
    bones: np.ndarray | Sequence[Sequence[int]],
    out_hw: tuple[int, int],
    scale: float = 1.0,
    sigma: float = 0.5,
    paf_width: float = 1.0,
    max_persons: int = 5,
    score_threshold: float = 0.1,
    heatmaps: np.ndarray | None = None,
    pafs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a clip straight into the stored dtypes: (uint8 heatmaps [F, K, H, W], int8 PAFs
    [F, 2B, H, W]).

    Equal, value for value, to ``quantize_raster(render_clip(...), K)`` with the same
    arguments (round(255 H) and round(127 P), rounded half to even and clipped), without the
    float32 raster: only the pixels within a Gaussian's cutoff box or a PAF segment's band are
    computed. Arguments as :func:`render_clip`; ``heatmaps`` and ``pafs`` are optional
    preallocated C-contiguous uint8 [F, K, H, W] and int8 [F, 2B, H, W] arrays, zeroed, then
    written and returned (e.g. ``buffer[:F]`` of a buffer reused across clips).
    """
    kp, bone_arr, h, w = _normalize_args(
        keypoints, bones, out_hw, scale, sigma, paf_width, max_persons, score_threshold
    )
    num_frames, num_joints, num_bones = kp.shape[0], kp.shape[2], bone_arr.shape[0]
    heat_shape = (num_frames, num_joints, h, w)
    paf_shape = (num_frames, 2 * num_bones, h, w)
    # The kernel zeroes both arrays first, so uninitialised memory is fine.
    if heatmaps is None:
        heatmaps = np.empty(heat_shape, dtype=np.uint8)
    else:
        _check_out(heatmaps, heat_shape, np.uint8, "heatmaps", "[F, K, H, W]")
    if pafs is None:
        pafs = np.empty(paf_shape, dtype=np.int8)
    else:
        _check_out(pafs, paf_shape, np.int8, "pafs", "[F, 2B, H, W]")
    if np.shares_memory(heatmaps, pafs):
        raise ValueError("heatmaps and pafs must not share memory")
    _render_clip_quantized_kernel(
        kp,
        bone_arr,
        float(scale),
        float(sigma),
        float(paf_width),
        int(max_persons),
        float(score_threshold),
        heatmaps,
        pafs,
    )
    return heatmaps, pafs


def quantize_raster(raster: np.ndarray, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """Split and quantise a raster [..., K + 2B, H, W] for storage.

    Returns heatmaps uint8 [..., K, H, W] = round(h * 255) and PAFs int8 [..., 2B, H, W] =
    round(p * 127), both clipped to their range; :func:`dequantize_raster` inverts it within
    1/255 and 1/127 (half of that for values inside [0, 1] and [-1, 1]).
    """
    r = np.asarray(raster)
    if r.ndim < 3 or not 0 <= num_joints <= r.shape[-3]:
        raise ValueError(
            f"raster must be [..., K + 2B, H, W] with at least {num_joints} channels; "
            f"got shape {r.shape}"
        )
    if (r.shape[-3] - num_joints) % 2:
        raise ValueError(
            f"raster has {r.shape[-3]} channels: {num_joints} heatmaps leave an odd PAF count"
        )
    heat = np.clip(np.rint(r[..., :num_joints, :, :] * 255.0), 0, 255).astype(np.uint8)
    paf = np.clip(np.rint(r[..., num_joints:, :, :] * 127.0), -127, 127).astype(np.int8)
    return heat, paf


def dequantize_raster(heatmaps: np.ndarray, pafs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_raster`: float32 [..., K + 2B, H, W]."""
    heat = np.asarray(heatmaps)
    paf = np.asarray(pafs)
    if heat.dtype != np.uint8 or paf.dtype != np.int8:
        raise ValueError(f"expected uint8 heatmaps and int8 PAFs; got {heat.dtype}, {paf.dtype}")
    if heat.ndim < 3 or paf.ndim != heat.ndim or heat.shape[:-3] != paf.shape[:-3]:
        raise ValueError(f"heatmaps {heat.shape} and PAFs {paf.shape} do not match")
    if heat.shape[-2:] != paf.shape[-2:]:
        raise ValueError(f"heatmaps {heat.shape} and PAFs {paf.shape} differ in size")
    out = np.empty(
        heat.shape[:-3] + (heat.shape[-3] + paf.shape[-3],) + heat.shape[-2:], np.float32
    )
    k = heat.shape[-3]
    np.multiply(heat, np.float32(1.0 / 255.0), out=out[..., :k, :, :])
    np.multiply(paf, np.float32(1.0 / 127.0), out=out[..., k:, :, :])
    return out


def flip_raster(raster: np.ndarray, layout: str | Layout) -> np.ndarray:
    """Mirror a raster [..., K + 2B, H, W] horizontally, remapping channels.

    The result equals the raster of the flipped keypoints (``skeletons.flip_keypoints``):
    heatmaps swap left and right joints; bone channels take their mirror bone's vectors with
    the sign flips of the contract's flip rule (``Layout.channel_flip_sign``).
    """
    lay = get_layout(layout)
    r = np.asarray(raster)
    if r.ndim < 3 or r.shape[-3] != lay.num_channels:
        raise ValueError(
            f"raster must be [..., {lay.num_channels}, H, W] for layout {lay.name}; "
            f"got shape {r.shape}"
        )
    flipped = r[..., lay.channel_flip_index, :, ::-1]
    sign = lay.channel_flip_sign.astype(r.dtype if r.dtype.kind == "f" else np.float32)
    return np.ascontiguousarray(flipped * sign[:, None, None])
