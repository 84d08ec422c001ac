"""Video decoding: the frames kept at the build stride, resized to the stored size.

decord first (it resizes at decode time, which matters for 1080p sources); PyAV when decord
cannot open or decode a file. The same file always takes the same path, so rebuilds are
reproducible.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np

from .shards.info import stored_size

__all__ = ["DecodeError", "DecodedVideo", "probe", "decode_video", "kept_indices"]


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


def kept_indices(num_frames: int, stride: int) -> np.ndarray:
    return np.arange(0, num_frames, stride, dtype=np.int32)


def _decode_decord(path: str, stride: int, short_side: int) -> DecodedVideo:
    import decord

    probe_reader = decord.VideoReader(path, num_threads=1)
    n = len(probe_reader)
    if n <= 0:
        raise DecodeError("video has no frames")
    h, w = probe_reader[0].shape[:2]
    fps = float(probe_reader.get_avg_fps() or 0.0)
    del probe_reader
    sh, sw = stored_size(h, w, short_side)
    # Resizing inside the decoder (swscale) avoids materialising full-resolution frames.
    reader = decord.VideoReader(path, num_threads=1, width=sw, height=sh)
    indices = kept_indices(n, stride)
    frames = reader.get_batch(indices.tolist()).asnumpy()
    # decord grows memory on some files when the reader is left positioned mid-stream
    # (dmlc/decord#197, #208); seeking back before dropping it keeps workers flat.
    reader.seek(0)
    del reader
    if frames.shape[0] != len(indices) or frames.shape[1:3] != (sh, sw):
        raise DecodeError(f"decord returned frames of shape {frames.shape}")
    return DecodedVideo(frames, indices, n, fps, h, w, "decord")


def _decode_pyav(path: str, stride: int, short_side: int) -> DecodedVideo:
    import av
    from PIL import Image

    frames: list[np.ndarray] = []
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
    return DecodedVideo(np.stack(frames), np.asarray(indices, dtype=np.int32), n, fps, h, w, "pyav")


def decode_video(path: str, stride: int = 2, short_side: int = 256) -> DecodedVideo:
    """Decode the frames kept at ``stride`` from a local video file, resized for storage.

    Raises DecodeError with a one-line reason when neither decoder can read the file.
    """
    if stride < 1:
        raise ValueError("frame stride must be >= 1")
    try:
        return _decode_decord(path, stride, short_side)
    except DecodeError:
        raise
    except Exception as exc:  # decord raises bare DECORDError/RuntimeError on bad files
        first_error = f"decord: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    finally:
        gc.collect()
    try:
        return _decode_pyav(path, stride, short_side)
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
