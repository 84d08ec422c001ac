"""Write frames to a video file with PyAV: MPEG-4 part 2 in mp4 and in avi. Both decode with
decord 0.6 and with PyAV.

Settings aim at stable colours (the trainer learns the scene context from them): a constant
near-lossless quantiser and one encoder thread, so that the output bytes depend only on the
frames. H.264 (libx264) was used before, but its output changed from run to run on the same
frames (1 to 7 of 48 encodes differed in the test suite, with threads=1 and no threaded
lookahead), which made `pipeline synth` irreproducible; MPEG-4 part 2 gave identical bytes in
every one of 192 encodes.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["write_video", "mp4_codec"]


def mp4_codec() -> str:
    """The codec used for mp4 files (see the module docstring for why not H.264)."""
    return "mpeg4"


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> str:
    """Encode RGB uint8 frames [T, H, W, 3] to ``path`` (.mp4 or .avi); returns the codec used."""
    path = Path(path)
    t, h, w, c = frames.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"frames must be [T, H, W, 3] with even H and W, got {frames.shape}")
    codec, fmt = mp4_codec(), "avi" if path.suffix == ".avi" else "mp4"
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"qmin": "1", "qmax": "3"}  # constant near-lossless quantiser
        stream.bit_rate = max(2_000_000, 24 * w * h)
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec
