"""Click settings shared by the tool commands (the same as the `pipeline` group's), and the
writing of their one output file."""

from __future__ import annotations

from .. import storage
from ..errors import InvalidInput, describe
from ..storage import check_output_file

__all__ = ["CONTEXT", "check_output_file", "write_output_file"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def write_output_file(out: str, data: bytes, option: str = "-o") -> None:
    try:
        storage.write_bytes_atomic(out, data)
    except OSError as exc:
        raise InvalidInput(f"{option} {out} cannot be written: {describe(exc)}") from None
