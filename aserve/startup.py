"""Start-up errors, and the config files flags name: read once, each error one line.

A bad flag value is the flag parser's (exit status 2); a config file that cannot be read or
does not parse at start-up is a :class:`StartupError` (one line on stderr, exit status 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import aiofiles

from aserve.config import parse_text_proto
from aserve.errors import ServingError
from aserve.flags import ServerOptions

M = TypeVar("M")


class StartupError(Exception):
    """Start-up failed; the message is one line for the user."""


async def read_file(flag: str, path: str) -> str:
    try:
        async with aiofiles.open(path, encoding="utf-8") as f:
            return str(await f.read())
    except (OSError, ValueError) as e:  # ValueError: not UTF-8
        reason = e.strerror if isinstance(e, OSError) else f"not UTF-8 text ({e})"
        raise StartupError(f"cannot read --{flag}={path}: {reason}") from None


async def read_proto(options: ServerOptions, flag: str, message: type[M]) -> M | None:
    """The text proto in the file --``flag`` names (None if the flag is unset)."""
    path = getattr(options, flag)
    if not path:
        return None
    text = await read_file(flag, path)
    with one_line_errors():
        return parse_text_proto(text, message)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A bad config file at start-up is a one-line error, not a traceback."""
    try:
        yield
    except ServingError as e:
        raise StartupError(e.message) from None
