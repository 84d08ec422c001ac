"""How command-line tools report user mistakes: one line and a non-zero exit, never a traceback.

Lives apart from :mod:`pipeline.cli` so that command modules (``pipeline.tools``, ``synth``) can
use the decorator while ``pipeline.cli`` imports them, without an import cycle. The trainer's CLI
builds its own decorator with :func:`cli_errors`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["cli_errors", "one_line", "user_errors"]


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cli_errors(
    user_types: Callable[[], tuple[type[BaseException], ...]],
    interrupted: str,
    passthrough_modules: tuple[str, ...] = ("ray", "torch"),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: exceptions of ``user_types()`` become one line and exit status 1.

    ``user_types`` is called when an error happens (so the exception classes can live in
    modules that import the CLI). Exceptions whose class comes from ``passthrough_modules`` are
    bugs or infrastructure failures and keep their traceback, as does anything else.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except KeyboardInterrupt:
                click.echo(interrupted, err=True)
                sys.exit(130)
            except Exception as exc:
                from_library = type(exc).__module__.startswith(passthrough_modules)
                if isinstance(exc, user_types()) and not from_library:
                    raise click.ClickException(one_line(exc)) from None
                raise

        return wrapper

    return decorate


def _pipeline_user_errors() -> tuple[type[BaseException], ...]:
    from .build import BuildError
    from .formats import PoseFileError

    return (BuildError, PoseFileError, FileNotFoundError, NotADirectoryError, ValueError,
            RuntimeError)  # fmt: skip


user_errors = cli_errors(_pipeline_user_errors, "interrupted; run the same command again to resume")
