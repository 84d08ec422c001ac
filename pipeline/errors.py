"""How the command-line tools report errors: a user's mistake in one line, a bug with its traceback.

Every mistake a user can make (a bad option, an input that does not exist, a file in the wrong
format, data that does not match a checkpoint) raises a subclass of :class:`UserError`; the CLIs
turn exactly those into one line on stderr and exit status 1. Anything else, builtin
``ValueError`` and ``RuntimeError`` included, is a bug and keeps its traceback. ``--debug`` on
any command shows the traceback of a user error too.

Lives apart from :mod:`pipeline.cli` so that command modules (``pipeline.tools``, ``synth``, the
trainer's CLI) can use :data:`user_errors` without an import cycle.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = [
    "UserError",
    "InputNotFound",
    "InvalidInput",
    "cli_errors",
    "one_line",
    "root_cause",
    "describe",
    "user_errors",
    "plain_warnings",
    "storage_access_error",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class UserError(Exception):
    """A mistake of the user: reported as one line and exit status 1, never a traceback."""


class InputNotFound(UserError, FileNotFoundError):
    """A file, folder or URL the user named does not exist."""


class InvalidInput(UserError, ValueError):
    """Input the user gave is not what the command reads (format, content, combination)."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through ``raise ... from``, Ray's task and actor wrappers
    (``RayTaskError.cause``, an actor's creation error) and webdataset's decoding wrapper."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        if not isinstance(inner, BaseException):
            # ActorDiedError keeps the creation task's RayTaskError here.
            inner = getattr(getattr(exc, "_actor_init_failed_error", None), "cause", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


# The last "Type: message" line of a traceback printed into an error message (Ray's actor
# errors carry their cause only as text).
_EXCEPTION_LINE = re.compile(
    r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): ?(.*)$", re.M
)


def describe(exc: BaseException) -> str:
    """``Type: message`` of the root cause, one line of plain text: what errors.parquet and the
    build's setup checks report (never a wrapper's name, never terminal colour codes)."""
    cause = root_cause(exc)
    text = _ANSI.sub("", str(cause)).strip()
    if type(cause).__module__.startswith("ray.") and text:
        found = _EXCEPTION_LINE.findall(text)
        if found:
            name, message = found[-1]
            return f"{name.rsplit('.', 1)[-1]}: {message.strip()}".rstrip(": ")
    first = text.splitlines()[0] if text else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, plain text (terminal colour codes removed)."""
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# botocore's errors for storage that cannot be reached or signed into. They reach a command from
# s3fs, DataLoader workers or Ray tasks, so they are recognised by their root cause's class name
# (botocore need not be importable for a local-only user).
_STORAGE_ACCESS_ERRORS = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ProxyConnectionError",
    "NoCredentialsError", "PartialCredentialsError", "NoRegionError", "SSLError",
})  # fmt: skip


def storage_access_error(exc: BaseException) -> str | None:
    """One line for an object store that cannot be reached or signed into, else None."""
    cause = root_cause(exc)
    if type(cause).__module__.startswith("botocore") and (
        type(cause).__name__ in _STORAGE_ACCESS_ERRORS
    ):
        return (
            f"object storage not reachable ({describe(cause)}); check AWS_ENDPOINT_URL and "
            "the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or a profile)"
        )
    return None


def cli_errors(interrupted: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator for click commands: :class:`UserError` -> one line, exit status 1; Ctrl-C ->
    ``interrupted``, exit status 130. It adds ``--debug`` (show the traceback instead)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except KeyboardInterrupt:
                click.echo(interrupted, err=True)
                sys.exit(130)
            except UserError as exc:
                if debug:
                    raise
                raise click.ClickException(one_line(exc)) from None
            except Exception as exc:
                message = storage_access_error(exc)
                if message is None or debug:
                    raise
                raise click.ClickException(message) from None

        return click.option("--debug", is_flag=True, help="On an error, show the full traceback.")(
            wrapper
        )

    return decorate


user_errors = cli_errors("interrupted; run the same command again to resume")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {one_line(message) if isinstance(message, Warning) else message}\n"


def plain_warnings() -> None:
    """Warnings as ``warning: message`` lines for a CLI's user: not Python's file, line number and
    echoed source line, which say where in our code, not what to do. For the current click
    command only: the format is restored when it ends (a program or a test session that runs
    the CLI in-process keeps its own)."""
    import warnings

    before = warnings.formatwarning
    warnings.formatwarning = _one_line_warning

    def restore() -> None:
        warnings.formatwarning = before

    click.get_current_context().call_on_close(restore)
