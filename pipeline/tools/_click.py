"""Click settings shared by the tool commands (the same as the `pipeline` group's), and the
writing of their one output file."""

from __future__ import annotations

import os

from .. import storage
from ..errors import InvalidInput, describe

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def check_output_file(out: str, option: str = "-o") -> None:
    """Fail before any work when a local ``out`` cannot be a file: its folder cannot be made (a
    file is in the way, no permission) or ``out`` is a folder."""
    if storage.is_remote(out):
        return  # a bucket's errors come with the write, below
    path = os.path.abspath(storage.strip_protocol(out))
    if os.path.isdir(path):
        raise InvalidInput(f"{option} {out} is a folder; give a file name")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"{option} {out}: cannot create its folder ({describe(exc)})") from None


def write_output_file(out: str, data: bytes, option: str = "-o") -> None:
    try:
        storage.write_bytes_atomic(out, data)
    except OSError as exc:
        raise InvalidInput(f"{option} {out} cannot be written: {describe(exc)}") from None
