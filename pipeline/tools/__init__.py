"""Command-line tools over a built dataset: ``inspect``, ``verify``, ``show`` and ``export``.

Each command lives in its own module; :mod:`pipeline.cli` registers them on the ``pipeline``
group. All of them take a dataset root or a split folder, local or s3://.
"""

from .export import export
from .inspect_cmd import inspect_dataset
from .show import show
from .verify import verify

__all__ = ["export", "inspect_dataset", "show", "verify"]
