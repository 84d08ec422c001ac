"""Render one synthetic video: figures performing a motion over a scene, with exact poses.

Geometry. Each person is the 3D body of :mod:`pipeline.synth.body`, turned by a yaw angle and
placed in camera space (metres; x to the image's right, y up, z away from the camera). A pinhole
camera maps a point to pixels as ``u = cx + f * x / z``, ``v = cy - f * y / z`` with
``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``: pixel centres are at integers, the contract's
convention. Joint pixel coordinates are then rounded to 1/16 pixel, and the figure is drawn with
OpenCV at that fixed-point precision (``shift=4``), so the keypoints we write are exactly the
points the drawing was made from.

Visibility. A joint is visible when it lies within the frame (``0 <= u <= W - 1``,
``0 <= v <= H - 1``) and the pixel that contains it (``floor(u + 0.5)``, ``floor(v + 0.5)``)
shows that person: not another person drawn in front,
not the occluding panel of a hidden video. Invisible joints get score 0 (kinetics) or Kinect
trackingState 0 (NTU); their coordinates are kept in :class:`RenderedVideo` but the pose files
mark them absent. ``labels`` holds, per pixel, who is seen there, for tests and checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.formats.ntu_skeleton import NtuBody
from pipeline.synth import body as B
from pipeline.synth.motions import MotionParams, is_one_shot, motion_angles
from pipeline.synth.scene import figure_colours, make_context, occluder_colour, render_background

__all__ = ["VideoSpec", "RenderedVideo", "render_video", "OCCLUDER_LABEL"]

OCCLUDER_LABEL = 255
_SHIFT = 4  # OpenCV fixed-point bits: coordinates are drawn at 1/16 pixel
_ONE = 1 << _SHIFT
# Kinect v2 depth camera, for the plausible depthX/depthY columns of NTU files.
_DEPTH_F, _DEPTH_CX, _DEPTH_CY = 365.5, 255.5, 211.5
_KINECT_BODY_ID = 72057594037927936  # Kinect body ids are large 64-bit numbers like this


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides one video's pixels and poses."""

    motion: str
    context: int
    frames: int
    width: int
    height: int
    fps: float
    seed: int
    persons: int = 1
    hidden: str | None = None  # None, "occluded" (behind a panel) or "cutoff" (out of frame)
    camera: str = "kinetics"  # "kinetics": free framing; "ntu": Kinect-like fixed camera
    camera_yaw: float = 0.0  # degrees; NTU's three cameras look from different sides


@dataclass
class RenderedVideo:
    """A rendered video and its ground truth (P persons, T frames)."""

    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    labels: np.ndarray  # uint8 [T, H, W]: 0 background, p + 1 person p, 255 occluder
    background: np.ndarray  # uint8 [H, W, 3] RGB, the scene without people
    points: np.ndarray  # float32 [T, P, 30, 2] model joints in pixels (1/16 px grid)
    visible: np.ndarray  # bool [T, P, 30]
    scores: np.ndarray  # float32 [T, P, 30]: detector-like confidence, 0 where not visible
    tracking: np.ndarray  # int8 [T, P, 25]: Kinect trackingState
    xyz: np.ndarray  # float32 [T, P, 25, 3] camera-space metres
    lean: np.ndarray  # float32 [T, P, 2] Kinect leanX, leanY
    yaw: np.ndarray  # float64 [P] degrees
    body_ids: list[int]
    hands: np.ndarray  # int [P, 4]: Kinect hand confidence/state, left then right
    occluder: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (exclusive) of the panel

    def openpose18(self) -> np.ndarray:
        """Keypoints float32 [T, P, 18, 3] (x, y, score) in OpenPose-18 order."""
        idx = B.OPENPOSE18_FROM_MODEL
        return np.concatenate(
            [self.points[:, :, idx], self.scores[:, :, idx, None]], axis=-1
        ).astype(np.float32)

    def ntu25(self) -> np.ndarray:
        """Keypoints float32 [T, P, 25, 3] (colorX, colorY, score from trackingState)."""
        score = np.array([0.0, 0.5, 1.0], dtype=np.float32)[self.tracking]
        return np.concatenate([self.points[:, :, :25], score[..., None]], axis=-1)

    def ntu_bodies(self) -> list[list[NtuBody]]:
        # colorX/colorY are written in the coordinates of NTU's 1920x1080 colour frame (see
        # to_ntu_color), as in the real dataset, whatever size our video is.
        """Per frame, the bodies a Kinect would report: persons with a tracked joint."""
        t_count, p_count = self.tracking.shape[:2]
        h, w = self.frames.shape[1:3]
        out = []
        for t in range(t_count):
            bodies = []
            for p in range(p_count):
                if not self.tracking[t, p].any():
                    continue
                xyz = self.xyz[t, p].astype(np.float64)
                joints = np.zeros((25, 11), dtype=np.float64)
                joints[:, :3] = xyz
                joints[:, 3] = _DEPTH_CX + _DEPTH_F * xyz[:, 0] / xyz[:, 2]
                joints[:, 4] = _DEPTH_CY - _DEPTH_F * xyz[:, 1] / xyz[:, 2]
                joints[:, 5:7] = to_ntu_color(self.points[t, p, :25], h, w)
                half = np.deg2rad(self.yaw[p]) / 2  # orientation: the body's turn about y
                joints[:, 7:11] = (np.cos(half), 0.0, np.sin(half), 0.0)
                u, v = self.points[t, p, :25, 0], self.points[t, p, :25, 1]
                # Kinect FrameEdges flags: right 1, left 2, top 4, bottom 8.
                edges = (
                    1 * bool((u > w - 1).any())
                    | 2 * bool((u < 0).any())
                    | 4 * bool((v < 0).any())
                    | 8 * bool((v > h - 1).any())
                )
                hl_conf, hl_state, hr_conf, hr_state = (int(x) for x in self.hands[p])
                bodies.append(
                    NtuBody(
                        body_id=self.body_ids[p],
                        joints=joints,
                        tracking=self.tracking[t, p].astype(np.int64),
                        clipped_edges=edges,
                        hand_left=(hl_conf, hl_state),
                        hand_right=(hr_conf, hr_state),
                        lean=(float(self.lean[t, p, 0]), float(self.lean[t, p, 1])),
                        tracking_state=2,
                    )
                )
            out.append(bodies)
        return out


@dataclass
class _Person:
    shape: B.BodyShape
    rel: np.ndarray  # [T, 30, 3] camera-axis coordinates relative to the placement
    offset: np.ndarray  # [3] placement in camera space
    yaw: float
    colours: dict[str, tuple[int, int, int]]
    lean: np.ndarray  # [T, 2]


def _project(points: np.ndarray, f: float, w: int, h: int) -> np.ndarray:
    """Camera-space points [..., 3] -> pixels [..., 2] (pixel centres at integers)."""
    z = points[..., 2]
    u = (w - 1) / 2 + f * points[..., 0] / z
    v = (h - 1) / 2 - f * points[..., 1] / z
    return np.stack([u, v], axis=-1)


def _bbox(uv: np.ndarray) -> tuple[float, float, float, float]:
    return (
        float(uv[..., 0].min()),
        float(uv[..., 0].max()),
        float(uv[..., 1].min()),
        float(uv[..., 1].max()),
    )


def _place(
    person: _Person,
    f: float,
    w: int,
    h: int,
    slot: tuple[float, float],
    rng: np.random.Generator,
    cutoff: bool,
) -> None:
    """Move (and if needed push back) a person so its whole motion fits its slot of the frame.

    A cut-off person is instead put mostly outside the frame, on the left or the right.
    """
    lo, hi = slot
    z = person.offset[2]
    margin = 3 + person.shape.height * 0.06 * f / z  # room for the head and limb thickness
    cut_side = rng.choice([-1, 1]) if cutoff else 0
    keep = rng.uniform(0.02, 0.1)  # fraction of a cut-off person's width left in the frame
    # Where in the slot the figure goes (fractions of the free room), drawn once.
    fx, fy = rng.uniform(0.1, 0.9), rng.uniform(0.55, 1.0)
    for _ in range(8):
        uv = _project(person.rel + person.offset, f, w, h)
        umin, umax, vmin, vmax = _bbox(uv)
        bw, bh = umax - umin, vmax - vmin
        room_w, room_h = (hi - lo) - 2 * margin, h - 2 * margin
        scale = max(bw / max(room_w, 1.0), bh / max(room_h, 1.0))
        if scale > 1.0:
            person.offset[2] *= scale * 1.02  # farther away: smaller
            continue
        target_u = lo + margin + fx * (room_w - bw)
        if cut_side < 0:
            target_u = keep * bw - bw
        elif cut_side > 0:
            target_u = w - keep * bw
        target_v = margin + fy * (room_h - bh)
        du, dv = target_u - umin, target_v - vmin
        if abs(du) < 0.25 and abs(dv) < 0.25:
            break
        z = person.offset[2]
        person.offset[0] += du * z / f
        person.offset[1] -= dv * z / f


def _primitives(
    uv: np.ndarray, z: np.ndarray, person: _Person, f: float
) -> list[tuple[float, str, tuple, tuple[int, int, int], int]]:
    """Drawing primitives of one person in one frame: (depth, kind, geometry, colour, size)."""
    scale = f / person.offset[2] * person.shape.height  # pixels per body height
    arm = max(3, round(0.055 * scale))
    leg = max(3, round(0.07 * scale))
    hand = max(3, round(0.03 * scale))
    neck = max(3, round(0.05 * scale))
    c = person.colours
    prims = []

    def line(a: int, b: int, colour: tuple[int, int, int], thick: int) -> None:
        prims.append(((z[a] + z[b]) / 2, "line", (a, b), colour, thick))

    torso = (B.SHOULDER_R, B.SHOULDER_L, B.HIP_L, B.HIP_R)
    prims.append((float(np.mean(z[list(torso)])) + 0.05, "poly", torso, c["shirt"], 0))
    line(B.SPINE_BASE, B.SPINE_SHOULDER, c["shirt"], leg)
    line(B.SPINE_SHOULDER, B.NECK, c["skin"], neck)
    line(B.NECK, B.HEAD, c["skin"], neck)
    radius = person.shape.head_radius * f / z[B.HEAD]
    prims.append((z[B.HEAD], "circle", (B.HEAD,), c["skin"], radius))
    for sh, el, wr, ha, tip, th in (
        (B.SHOULDER_R, B.ELBOW_R, B.WRIST_R, B.HAND_R, B.TIP_R, B.THUMB_R),
        (B.SHOULDER_L, B.ELBOW_L, B.WRIST_L, B.HAND_L, B.TIP_L, B.THUMB_L),
    ):
        line(sh, el, c["shirt"], arm)
        line(el, wr, c["skin"], arm)
        line(wr, tip, c["skin"], hand)
        line(ha, th, c["skin"], hand)
    for hip, kn, an, ft in (
        (B.HIP_R, B.KNEE_R, B.ANKLE_R, B.FOOT_R),
        (B.HIP_L, B.KNEE_L, B.ANKLE_L, B.FOOT_L),
    ):
        line(hip, kn, c["trousers"], leg)
        line(kn, an, c["trousers"], leg)
        line(an, ft, c["trousers"], hand + 1)
    prims.sort(key=lambda item: -item[0])  # far first, so nearer limbs cover farther ones
    return prims


def _draw(
    image: np.ndarray,
    labels: np.ndarray,
    fixed: np.ndarray,
    prims: list,
    label: int,
) -> None:
    """Draw primitives anti-aliased into ``image`` and hard-edged (``label``) into ``labels``."""
    for _, kind, geom, colour, size in prims:
        if kind == "line":
            a, b = (tuple(int(v) for v in fixed[i]) for i in geom)
            cv2.line(image, a, b, colour, size, cv2.LINE_AA, _SHIFT)
            cv2.line(labels, a, b, label, size, cv2.LINE_8, _SHIFT)
        elif kind == "circle":
            centre = tuple(int(v) for v in fixed[geom[0]])
            radius = max(_ONE, round(size * _ONE))
            cv2.circle(image, centre, radius, colour, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(labels, centre, radius, label, -1, cv2.LINE_8, _SHIFT)
        else:
            pts = fixed[list(geom)].astype(np.int32)
            cv2.fillPoly(image, [pts], colour, cv2.LINE_AA, _SHIFT)
            cv2.fillPoly(labels, [pts], label, cv2.LINE_8, _SHIFT)


def _motion_params(rng: np.random.Generator, motion: str, seconds: float) -> MotionParams:
    duration = seconds * rng.uniform(0.3, 0.5)
    onset = seconds * rng.uniform(0.08, 0.3)
    if is_one_shot(motion):
        onset = min(onset, max(seconds * 0.95 - duration, 0.0))
    return MotionParams(
        period=rng.uniform(0.7, 1.3),
        phase=rng.uniform(0, 2 * np.pi),
        amplitude=rng.uniform(0.85, 1.1),
        onset=onset,
        duration=max(duration, 1e-3),
    )


def render_video(spec: VideoSpec) -> RenderedVideo:
    """Render ``spec`` (deterministic: the same spec gives the same arrays)."""
    rng = np.random.default_rng(spec.seed)
    t_count, w, h = spec.frames, spec.width, spec.height
    times = np.arange(t_count) / spec.fps
    n = 1 if spec.hidden else spec.persons

    if spec.camera == "ntu":
        # Kinect v2's colour camera (f about 1060 px at 1920x1080), scaled to our frame height.
        f = 1060.0 * h / 1080.0
        depth_range = (2.6, 3.6)
    else:
        # A free camera: pick the focal length that makes a 1.7 m person at 3.75 m fill a random
        # fraction of the frame height.
        f = rng.uniform(0.55, 0.8) * h * 3.75 / 1.7
        depth_range = (3.0, 4.5)

    people: list[_Person] = []
    for _ in range(n):
        shape = B.sample_shape(rng)
        params = _motion_params(rng, spec.motion, t_count / spec.fps)
        angles = motion_angles(spec.motion, times, params)
        joints = B.forward_kinematics(shape, angles, t_count)
        if spec.camera == "ntu":
            yaw = spec.camera_yaw + rng.uniform(-10, 10)
        else:
            yaw = rng.uniform(-35, 35)
        psi = np.deg2rad(yaw)
        x, y, zb = joints[..., 0], joints[..., 1], joints[..., 2]
        # Facing the camera: the body's forward (+Z) points at the camera (-z in camera space),
        # and its left (+X) appears on the image's right.
        rel = np.stack(
            [x * np.cos(psi) + zb * np.sin(psi), y, x * np.sin(psi) - zb * np.cos(psi)], axis=-1
        )
        offset = np.array([0.0, -1.0, rng.uniform(*depth_range)])
        lean = np.stack(
            [
                np.sin(np.deg2rad(angles.get("torso_side", np.zeros(t_count)))),
                np.sin(np.deg2rad(angles.get("torso_bow", np.zeros(t_count)))),
            ],
            axis=-1,
        )
        people.append(_Person(shape, rel, offset, yaw, figure_colours(rng), lean))

    order = rng.permutation(n)  # which slot of the frame each person takes
    for p, person in enumerate(people):
        slot_index = int(order[p])
        slot = (w * slot_index / n, w * (slot_index + 1) / n)
        _place(person, f, w, h, slot, rng, cutoff=spec.hidden == "cutoff")

    background = render_background(make_context(spec.context), w, h, rng)
    cam = np.stack([p.rel + p.offset for p in people]) if people else np.zeros((0, t_count, 30, 3))
    cam = cam.transpose(1, 0, 2, 3)  # [T, P, 30, 3]
    # Round to the drawing grid: these are the exact points the figure is drawn from.
    fixed = np.rint(_project(cam, f, w, h) * _ONE)
    points = (fixed / _ONE).astype(np.float32)

    occluder = None
    if spec.hidden == "occluded":
        # A panel over everything the person covers during the video, so pose fails throughout.
        pad = 4 + people[0].shape.height * 0.1 * f / people[0].offset[2]
        umin, umax, vmin, vmax = _bbox(points[:, 0])
        x0, y0 = max(0, int(np.floor(umin - pad))), max(0, int(np.floor(vmin - pad)))
        x1, y1 = min(w, int(np.ceil(umax + pad)) + 1), min(h, int(np.ceil(vmax + pad)) + 1)
        occluder = (x0, y0, x1, y1)
        panel = occluder_colour(rng)

    frames = np.empty((t_count, h, w, 3), dtype=np.uint8)
    labels = np.zeros((t_count, h, w), dtype=np.uint8)
    draw_order = sorted(range(n), key=lambda p: -people[p].offset[2])
    for t in range(t_count):
        frames[t] = background
        for p in draw_order:
            prims = _primitives(points[t, p], cam[t, p, :, 2], people[p], f)
            _draw(frames[t], labels[t], fixed[t, p].astype(np.int64), prims, p + 1)
        if occluder is not None:
            x0, y0, x1, y1 = occluder
            frames[t, y0:y1, x0:x1] = panel
            frames[t, y0:y1:6, x0:x1] = (np.asarray(panel) * 0.85).astype(np.uint8)
            labels[t, y0:y1, x0:x1] = OCCLUDER_LABEL

    ui = np.floor(points[..., 0] + 0.5).astype(np.int64)
    vi = np.floor(points[..., 1] + 0.5).astype(np.int64)
    # Inside means the point itself lies within the outermost pixel centres, so that normalised
    # coordinates (x / width) of visible joints stay within 0..1.
    x, y = points[..., 0], points[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    seen = labels[np.arange(t_count)[:, None, None], np.clip(vi, 0, h - 1), np.clip(ui, 0, w - 1)]
    person_label = (np.arange(n) + 1)[None, :, None]
    visible = inside & (seen == person_label)

    # Detector-like confidences (3 decimals, as in ST-GCN's files) for what can be seen.
    scores = np.where(visible, np.round(rng.uniform(0.6, 1.0, visible.shape), 3), 0.0)
    # Kinect: tracked (2) where seen, now and then only inferred (1), else not tracked (0).
    tracking = np.where(visible[..., :25], np.where(rng.random((t_count, n, 25)) < 0.04, 1, 2), 0)

    ids = rng.choice(np.arange(1000, 100000), size=n, replace=False)
    return RenderedVideo(
        frames=frames,
        labels=labels,
        background=background,
        points=points,
        visible=visible,
        scores=scores.astype(np.float32),
        tracking=tracking.astype(np.int8),
        xyz=cam[:, :, :25].astype(np.float32),
        lean=np.stack([p.lean for p in people], axis=1).astype(np.float32)
        if people
        else np.zeros((t_count, 0, 2), np.float32),
        yaw=np.array([p.yaw for p in people], dtype=np.float64),
        body_ids=[_KINECT_BODY_ID + int(i) for i in ids],
        hands=rng.integers(0, 2, size=(n, 4)) * np.array([1, 2, 1, 2]),
        occluder=occluder,
    )


NTU_COLOR_HW = (1080, 1920)  # Kinect v2 colour frame: NTU's colorX/colorY are pixels of it


def to_ntu_color(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates of our video -> NTU colour-frame pixels (pixel centres at integers)."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] + 0.5) * (NTU_COLOR_HW[1] / width) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (NTU_COLOR_HW[0] / height) - 0.5
    return out
