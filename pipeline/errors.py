"""How command-line tools report user mistakes: one line and a non-zero exit, never a traceback.

Lives apart from :mod:`pipeline.cli` so that command modules (``pipeline.tools``, ``synth``) can
use the decorator while ``pipeline.cli`` imports them, without an import cycle.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["user_errors"]


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes into a one-line error and exit code 1 (2 for usage); never a traceback.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .build import BuildError
        from .formats import PoseFileError

        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to resume", err=True)
            sys.exit(130)
        except (BuildError, PoseFileError, FileNotFoundError, NotADirectoryError) as exc:
            raise click.ClickException(str(exc).splitlines()[0]) from None
        except (ValueError, RuntimeError) as exc:
            if getattr(exc, "__module__", "").startswith(("ray", "torch")):
                raise
            raise click.ClickException(
                str(exc).splitlines()[0] if str(exc) else repr(exc)
            ) from None

    return wrapper
