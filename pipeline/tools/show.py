"""`pipeline show URL KEY -o out.png`: a picture of one sample, to check poses and rasters by eye.

The image is a grid of N kept frames (columns), each tile at the stored frame size:
- top row: the RGB frame with the skeleton drawn (bones of the layout, one colour per person
  slot; joints coloured from red at score 0 to green at score 1, left out below the score
  threshold);
- bottom row: the stored raster, upsampled to the frame: max over the heatmap channels in yellow,
  PAF magnitude (max over bones) in blue, over a darkened copy of the frame.
So the PNG is (2 x height) by (N x width) pixels.
"""

from __future__ import annotations

import difflib
import io
import posixpath
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from ..errors import InvalidInput, user_errors
from ..shards import Dataset, decode_pose, decode_raster
from ..skeletons import Layout, get_layout
from ..storage import check_output_file, write_output_file
from ._click import CONTEXT

__all__ = ["show", "SampleView", "load_sample", "find_sample", "render_sample", "pick_frames"]

# One colour per person slot (RGB), so a track keeps its colour across the frames.
PERSON_COLOURS = ((255, 200, 0), (0, 160, 255), (255, 0, 200), (120, 255, 0), (255, 255, 255))


@dataclass
class SampleView:
    key: str
    split: str
    label_name: str
    keypoints: np.ndarray  # float32 [F, P, K, 3]
    frame_indices: np.ndarray  # int [F]
    heatmaps: np.ndarray  # uint8 [F, K, h, w]
    pafs: np.ndarray  # int8 [F, 2B, h, w]
    frames: dict[int, np.ndarray]  # source frame index -> RGB uint8 [H, W, 3], chosen frames


def find_sample(ds: Dataset, key: str, split: str | None) -> tuple[str, dict[str, Any]]:
    """(split, index row) of ``key``; a one-line ValueError saying how to find keys if absent."""
    splits = ds.select(split)
    found = []
    known: list[str] = []
    for name in splits:
        rows = ds.split(name).index_rows()
        known += [r["key"] for r in rows]
        found += [(name, r) for r in rows if r["key"] == key]
    if len(found) > 1:
        names = ", ".join(s for s, _ in found)
        raise InvalidInput(f"key {key!r} is in splits {names}; choose one with --split")
    if not found:
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise InvalidInput(
            f"no sample {key!r} in split(s) {', '.join(splits)}{hint}; "
            f"list keys with: pipeline inspect {ds.root} --keys"
        )
    return found[0]


def pick_frames(num_frames: int, n: int) -> list[int]:
    """``n`` positions spread evenly over ``num_frames`` kept frames (fewer if there are fewer)."""
    if num_frames <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(n, num_frames))})


def load_sample(ds: Dataset, split: str, row: dict[str, Any], n_frames: int) -> SampleView:
    """The pose, raster and ``n_frames`` decoded frames of one sample (its three shards)."""
    import simplejpeg

    key = row["key"]
    rgb = ds.split(split).sample(key)
    keypoints, frame_indices, _ = decode_pose(rgb)
    heatmaps, pafs = decode_raster(rgb)
    frames = {}
    for pos in pick_frames(len(frame_indices), n_frames):
        index = int(frame_indices[pos])
        data = rgb.get(f"{index:06d}.jpg")
        if data is None:
            raise InvalidInput(f"{key}: frame {index:06d} missing from its rgb shard")
        frames[index] = simplejpeg.decode_jpeg(data, colorspace="RGB")
    return SampleView(
        key, split, row["label_name"], keypoints, frame_indices, heatmaps, pafs, frames
    )


def _score_colour(score: float) -> tuple[int, int, int]:
    s = float(np.clip(score, 0.0, 1.0))
    return (int(255 * (1 - s)), int(255 * s), 0)


def draw_skeleton(
    image: np.ndarray, keypoints: np.ndarray, layout: Layout, threshold: float
) -> np.ndarray:
    """Bones and joints of every person [P, K, 3] drawn on a copy of ``image`` (RGB)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    thick = max(1, round(min(out.shape[:2]) / 128))
    for p, person in enumerate(keypoints):
        colour = PERSON_COLOURS[p % len(PERSON_COLOURS)]
        ok = np.isfinite(person).all(axis=-1) & (person[:, 2] >= threshold)
        for a, b in layout.bones:
            if ok[a] and ok[b]:
                pa = (int(round(person[a, 0])), int(round(person[a, 1])))
                pb = (int(round(person[b, 0])), int(round(person[b, 1])))
                cv2.line(out, pa, pb, colour, thick, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            centre = (int(round(person[j, 0])), int(round(person[j, 1])))
            cv2.circle(out, centre, thick + 2, _score_colour(person[j, 2]), -1, cv2.LINE_AA)
    return out


HEATMAP_RGB = np.array([255.0, 230.0, 0.0], np.float32)
PAF_RGB = np.array([0.0, 140.0, 255.0], np.float32)


def raster_overlay(image: np.ndarray, heatmaps: np.ndarray, pafs: np.ndarray) -> np.ndarray:
    """Max heatmap (yellow) and PAF magnitude (blue) of one frame, upsampled over ``image``."""
    import cv2

    from ..raster import dequantize_raster  # imports numba: only when drawing

    raster = dequantize_raster(heatmaps, pafs)
    k = heatmaps.shape[0]
    heat = raster[:k].max(axis=0) if k else np.zeros(heatmaps.shape[1:], np.float32)
    vec = raster[k:].reshape(-1, 2, *raster.shape[1:])
    paf = np.sqrt((vec**2).sum(axis=1)).max(axis=0) if len(vec) else np.zeros_like(heat)
    h, w = image.shape[:2]
    heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    paf = np.clip(cv2.resize(paf, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    # Heatmap peaks (yellow) drawn over the PAF (blue): max, not sum, so joints stay visible.
    colour = np.maximum(heat[..., None] * HEATMAP_RGB, paf[..., None] * PAF_RGB)
    return np.clip(image.astype(np.float32) * 0.35 + colour, 0, 255).astype(np.uint8)


def _caption_scale(height: int) -> float:
    return max(0.3, height / 600)


def _caption(image: np.ndarray, text: str) -> None:
    """``text`` in the top-left corner on a dark box, drawn in place."""
    import cv2

    scale = _caption_scale(min(image.shape[:2]))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 4, th + base + 4), (0, 0, 0), -1)
    cv2.putText(
        image, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
    )


def title_band(text: str, width: int, tile_height: int) -> np.ndarray:
    """A dark strip as wide as the grid with ``text`` on it, shrunk to fit the width.

    The title (key and class) is often wider than one tile: drawn on the first tile it was cut
    at the tile's edge, next to the second tile's caption.
    """
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = _caption_scale(tile_height)
    (tw, _), _ = cv2.getTextSize(text, font, scale, 1)
    if tw + 4 > width:
        scale = max(0.25, scale * (width - 4) / tw)
    (_, th), base = cv2.getTextSize(text, font, scale, 1)
    band = np.zeros((th + base + 6, width, 3), np.uint8)
    cv2.putText(band, text, (2, th + 3), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return band


def render_sample(view: SampleView, layout: Layout, threshold: float) -> np.ndarray:
    """The grid image, RGB uint8 [title + 2 H, N W, 3]: a title strip, then two rows of tiles."""
    positions = {int(i): pos for pos, i in enumerate(view.frame_indices)}
    top, bottom = [], []
    for n, (index, image) in enumerate(sorted(view.frames.items())):
        pos = positions[index]
        skel = draw_skeleton(image, view.keypoints[pos], layout, threshold)
        over = raster_overlay(image, view.heatmaps[pos], view.pafs[pos])
        _caption(skel, f"frame {index}")
        if n == 0:
            _caption(over, "heatmaps + PAF")
        top.append(skel)
        bottom.append(over)
    grid = np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)
    title = title_band(f"{view.key} ({view.label_name})", grid.shape[1], grid.shape[0] // 2)
    return np.concatenate([title, grid], axis=0)


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def image_format(out: str) -> str:
    """PNG or JPEG, from the output's extension (a file named .jpg must hold a JPEG)."""
    fmt = IMAGE_FORMATS.get(posixpath.splitext(out)[1].lower())
    if fmt is None:
        raise click.UsageError(f"-o {out}: name a .png or .jpg file")
    return fmt


def _image_bytes(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def _key_from(positional: str | None, option: str | None) -> str:
    given = [a for a in (positional, option) if a is not None]
    if len(given) != 1:
        raise click.UsageError(
            "give the sample key once: pipeline show URL KEY -o out.png, or --key KEY "
            "(for a key that begins with '-': pipeline show URL -o out.png -- -KEY)"
        )
    return given[0]


class _ShowCommand(click.Command):
    """Adds a hint to "No such option" errors: usually a key that begins with '-'."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            exc.message = exc.message.rstrip(".") + (
                "; a KEY that begins with '-' goes after '--' or in --key: "
                "pipeline show URL -o out.png -- -KEY"
            )
            raise


@click.command("show", cls=_ShowCommand, context_settings=CONTEXT)
@click.argument("url", metavar="URL")
@click.argument("key", metavar="[KEY]", required=False)
@click.option("--key", "key_option", metavar="KEY", help="The sample key (may begin with '-').")
@click.option(
    "-o", "--out", required=True, metavar="FILE", help="Output .png or .jpg (path or URL)."
)
@click.option("--split", metavar="NAME", help="Split to look in (default: every split).")
@click.option(
    "--frames",
    "n_frames",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Kept frames to show, evenly spread over the sample.",
)
@user_errors
def show(
    url: str, key: str | None, key_option: str | None, out: str, split: str | None, n_frames: int
) -> None:
    """Draw N frames of one sample with its skeleton, and its raster, into a PNG.

    \b
    Keys may begin with '-' (YouTube ids do); pass them after '--' or with --key:
      pipeline show data/k400 -o out.png -- -abc123_000010_000020
      pipeline show data/k400 --key -abc123_000010_000020 -o out.png
    Find keys with: pipeline inspect URL --keys
    """
    sample_key = _key_from(key, key_option)
    check_output_file(out)
    fmt = image_format(out)
    ds = Dataset.open(url)
    split_name, row = find_sample(ds, sample_key, split)
    view = load_sample(ds, split_name, row, n_frames)
    if not view.frames:
        raise InvalidInput(f"sample {sample_key!r} has no frames")
    image = render_sample(view, get_layout(ds.info.layout), ds.info.raster.score_threshold)
    write_output_file(out, _image_bytes(image, fmt))
    click.echo(
        f"wrote {out}: {split_name}/{sample_key} ({view.label_name}), frames "
        f"{', '.join(str(i) for i in sorted(view.frames))}, {image.shape[1]}x{image.shape[0]}"
    )
