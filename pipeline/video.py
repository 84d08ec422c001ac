"""Video decoding: the frames kept at the build stride, resized to the stored size.

decord first (it resizes at decode time, which matters for 1080p sources); PyAV when decord
cannot open or decode a file. The same file always takes the same path, so rebuilds are
reproducible.

Frames are never upscaled for pose estimation: when the stored size is larger than the source
(a 320x240 video stored at short side 256) and the caller asks for them (``keep_native``),
the kept frames are also decoded at the source size; those are what a pose model sees
(``DecodedVideo.pose_frames``), and :func:`map_keypoints` brings its keypoints to stored pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .shards.info import stored_size

__all__ = [
    "DecodeError",
    "DecodedVideo",
    "current_rss",
    "decode_video",
    "kept_indices",
    "map_keypoints",
    "probe",
    "upscales",
]


class DecodeError(RuntimeError):
    """The video cannot be decoded (corrupt, truncated, no video stream, zero frames)."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [F, H, W, 3] RGB at the stored size
    frame_indices: np.ndarray  # int32 [F] source frame index of each kept frame
    source_frames: int  # frames in the source video
    fps: float
    source_height: int
    source_width: int
    decoder: str  # "decord" or "pyav"
    # uint8 [F, source_height, source_width, 3]: the kept frames at the source size, present
    # only when asked for (keep_native) and the stored frames are upscaled from them.
    native: np.ndarray | None = None

    @property
    def pose_frames(self) -> np.ndarray:
        """The frames to estimate poses on: the stored ones, or the source-size ones when the
        stored frames were upscaled (a pose model should never see invented pixels)."""
        return self.native if self.native is not None else self.frames

    def pose_to_stored(self, keypoints: np.ndarray) -> np.ndarray:
        """Keypoints in pixels of :attr:`pose_frames` -> pixels of the stored frames."""
        src = self.pose_frames.shape[1:3]
        return map_keypoints(keypoints, (int(src[0]), int(src[1])), self.frames.shape[1:3])


def kept_indices(num_frames: int, stride: int) -> np.ndarray:
    return np.arange(0, num_frames, stride, dtype=np.int32)


def upscales(source_hw: tuple[int, int], stored_hw: tuple[int, int]) -> bool:
    """True when the stored size is larger than the source on either side."""
    return stored_hw[0] > source_hw[0] or stored_hw[1] > source_hw[1]


def map_keypoints(
    keypoints: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]
) -> np.ndarray:
    """Keypoints [..., 3] (x, y, score) in pixels of a frame of size ``from_hw`` -> pixels of the
    same frame resized to ``to_hw``, pixel centres at integers (docs/design.md):
    x_to = (x + 0.5) * (to_w / from_w) - 0.5. Joints that are all zeros (absent) stay zeros.
    The input is returned unchanged when the sizes are equal.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if tuple(from_hw) == tuple(to_hw):
        return keypoints
    out = keypoints.copy()
    absent = (keypoints == 0).all(axis=-1)
    out[..., 0] = (keypoints[..., 0] + 0.5) * (to_hw[1] / from_hw[1]) - 0.5
    out[..., 1] = (keypoints[..., 1] + 0.5) * (to_hw[0] / from_hw[0]) - 0.5
    out[absent] = 0.0
    return out


def _decode_decord(path: str, stride: int, short_side: int, keep_native: bool) -> DecodedVideo:
    import decord

    reader = decord.VideoReader(path, num_threads=1)
    n = len(reader)
    if n <= 0:
        raise DecodeError("video has no frames")
    h, w = reader[0].shape[:2]
    fps = float(reader.get_avg_fps() or 0.0)
    sh, sw = stored_size(h, w, short_side)
    indices = kept_indices(n, stride)
    native = None
    if keep_native and upscales((h, w), (sh, sw)):
        # A second decode, at the source size, for the pose model. The source is small (it is
        # smaller than the stored size), and decoding it again costs less CPU than resizing
        # the decoded frames with PIL would (docs/pose.md), while the stored frames stay those
        # of decord's own resize, identical to a build without a pose model.
        native = reader.get_batch(indices.tolist()).asnumpy()
        reader.seek(0)
    del reader
    # Resizing inside the decoder (swscale) avoids materialising full-resolution frames.
    reader = decord.VideoReader(path, num_threads=1, width=sw, height=sh)
    frames = reader.get_batch(indices.tolist()).asnumpy()
    # decord grows memory on some files when the reader is left positioned mid-stream
    # (dmlc/decord#197, #208); seeking back before dropping it keeps workers flat.
    reader.seek(0)
    del reader
    if frames.shape[0] != len(indices) or frames.shape[1:3] != (sh, sw):
        raise DecodeError(f"decord returned frames of shape {frames.shape}")
    if native is not None and native.shape != (len(indices), h, w, 3):
        raise DecodeError(f"decord returned source-size frames of shape {native.shape}")
    return DecodedVideo(frames, indices, n, fps, h, w, "decord", native)


def _decode_pyav(path: str, stride: int, short_side: int, keep_native: bool) -> DecodedVideo:
    import av
    from PIL import Image

    frames: list[np.ndarray] = []
    natives: list[np.ndarray] = []
    indices: list[int] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            h = w = 0
            sh = sw = 0
            n = 0
            for frame in container.decode(stream):
                if n == 0:
                    h, w = frame.height, frame.width
                    sh, sw = stored_size(h, w, short_side)
                if n % stride == 0:
                    rgb = frame.to_ndarray(format="rgb24")
                    if (h, w) != (sh, sw):
                        if keep_native and upscales((h, w), (sh, sw)):
                            natives.append(rgb)
                        rgb = np.asarray(
                            Image.fromarray(rgb).resize((sw, sh), Image.Resampling.BILINEAR)
                        )
                    frames.append(rgb)
                    indices.append(n)
                n += 1
    except av.error.FFmpegError as exc:
        raise DecodeError(f"PyAV: {exc}") from None
    if n == 0:
        raise DecodeError("video has no frames")
    native = np.stack(natives) if natives else None
    return DecodedVideo(
        np.stack(frames), np.asarray(indices, dtype=np.int32), n, fps, h, w, "pyav", native
    )


def decode_video(
    path: str, stride: int = 2, short_side: int = 256, keep_native: bool = False
) -> DecodedVideo:
    """Decode the frames kept at ``stride`` from a local video file, resized for storage.

    ``keep_native``: also return the source-size frames when the stored ones are upscaled from
    them (``DecodedVideo.native``; what a pose model should see). Raises DecodeError with a
    one-line reason when neither decoder can read the file.
    """
    if stride < 1:
        raise ValueError("frame stride must be >= 1")
    try:
        return _decode_decord(path, stride, short_side, keep_native)
    except DecodeError:
        raise
    except Exception as exc:  # decord raises bare DECORDError/RuntimeError on bad files
        first_error = f"decord: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    try:
        return _decode_pyav(path, stride, short_side, keep_native)
    except DecodeError as exc:
        raise DecodeError(f"{exc} ({first_error})") from None
    except Exception as exc:
        raise DecodeError(f"PyAV: {exc} ({first_error})") from None


def probe(path: str) -> tuple[int, float, int, int]:
    """(frames, fps, height, width) of a local video, without decoding it all."""
    import decord

    reader = decord.VideoReader(path, num_threads=1)
    h, w = reader[0].shape[:2]
    return len(reader), float(reader.get_avg_fps() or 0.0), h, w


def current_rss() -> int:
    """This process's resident memory now (bytes), not its peak (Linux /proc; psutil else)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)
