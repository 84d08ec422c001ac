"""Helpers the dataset adapters share: file listing, CSV reading, class lists, key uniqueness."""

from __future__ import annotations

import csv
import io
import os
import posixpath
from importlib import resources

from .. import storage
from ..errors import InputNotFound, InvalidInput
from ..shards import make_key
from . import ErrorRow, VideoItem, normalise_class_name

# The reason recorded in filtered.parquet for a row whose class is not built.
NOT_IN_CLASSES = "class not in --classes"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")


def stem(path: str) -> str:
    base = posixpath.basename(path.rstrip("/"))
    root, ext = os.path.splitext(base)
    return root if ext else base


def list_files(url: str, extensions: tuple[str, ...]) -> dict[str, str]:
    """Files under ``url`` (recursively) with one of ``extensions``: stem -> URL.

    Raises FileNotFoundError when ``url`` does not exist.
    """
    fs, root = storage.get_fs(url)
    if not fs.exists(root):
        raise InputNotFound(f"{url} does not exist")
    if not fs.isdir(root):
        raise InvalidInput(f"{url} is not a directory")
    out: dict[str, str] = {}
    remote = storage.is_remote(url)
    protocol = str(url).split("://", 1)[0] if remote else ""
    for path in sorted(fs.find(root)):
        if path.lower().endswith(extensions):
            full = f"{protocol}://{path}" if remote else path
            out.setdefault(stem(path), full)
    return out


def read_text(url: str) -> str:
    if not storage.exists(url):
        raise InputNotFound(f"{url} does not exist")
    try:
        return storage.read_bytes(url).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{url}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_csv_rows(url: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV with a header."""
    text = read_text(url)
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    return [(reader.line_num, row) for row in reader]


def annotation_files(url: str) -> list[str]:
    """The CSV files named by ``--annotations``: a file, or every .csv in a folder."""
    if storage.isdir(url):
        files = sorted(list_files(url, (".csv",)).values())
        if not files:
            raise InputNotFound(f"no .csv files in {url}")
        return files
    if not storage.exists(url):
        raise InputNotFound(f"{url} does not exist")
    return [url]


def read_class_file(url: str) -> list[str]:
    names = [line.strip() for line in read_text(url).splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise InvalidInput(f"class file {url} is empty")
    if len({normalise_class_name(n) for n in names}) != len(names):
        raise InvalidInput(f"class file {url} lists a class twice")
    return names


def package_class_list(name: str) -> list[str]:
    """A class list shipped with the package (kinetics400, ntu60, ntu120)."""
    text = resources.files("pipeline").joinpath("data", f"{name}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_index(classes: list[str]) -> dict[str, int]:
    return {normalise_class_name(c): i for i, c in enumerate(classes)}


def dedupe_keys(items: list[VideoItem], errors: list[ErrorRow]) -> list[VideoItem]:
    """Keep the first video of each (split, key); later ones become errors (keys are ids)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for item in items:
        if (item.split, item.key) in seen:
            errors.append(
                ErrorRow(item.source, "annotation", f"duplicate key {item.key!r}", item.split)
            )
            continue
        seen.add((item.split, item.key))
        out.append(item)
    return out


def key_of(path: str) -> str:
    return make_key(stem(path))
