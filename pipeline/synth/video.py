"""Write frames to a video file with PyAV: H.264 in mp4 (mpeg4 when the wheel lacks libx264),
MPEG-4 part 2 in avi. Both decode with decord 0.6 and with PyAV.

Settings aim at stable colours (the trainer learns the scene context from them): near-lossless
quality, one encoder thread so that the output bytes depend only on the frames.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np

__all__ = ["write_video", "mp4_codec"]


@cache
def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises its own error types for unknown codecs, by version
        return False
    return True


def mp4_codec() -> str:
    """The codec used for mp4 files: libx264 when this PyAV build can encode it."""
    return "libx264" if _has_encoder("libx264") else "mpeg4"


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> str:
    """Encode RGB uint8 frames [T, H, W, 3] to ``path`` (.mp4 or .avi); returns the codec used."""
    path = Path(path)
    t, h, w, c = frames.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"frames must be [T, H, W, 3] with even H and W, got {frames.shape}")
    if path.suffix == ".avi":
        codec, fmt = "mpeg4", "avi"
        options = {"qmin": "1", "qmax": "3"}  # constant near-lossless quantiser
    else:
        codec, fmt = mp4_codec(), "mp4"
        options = (
            {"crf": "14", "preset": "fast"} if codec == "libx264" else {"qmin": "1", "qmax": "3"}
        )
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = options
        if codec == "mpeg4":
            stream.bit_rate = max(2_000_000, 24 * w * h)
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec
