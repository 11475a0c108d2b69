"""The project's own error types: each names the file (or series) and the reason in one line."""
from __future__ import annotations

import errno
import os
from pathlib import Path

NO_SPACE = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))  # as OSError prints them


class InputError(Exception):
    """A file or series that cannot be processed. ``str()`` is one line: ``<path>: <reason>``."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the cause printed
        super().__init__(f"{self.path}: {self.reason}")


class ConfigError(ValueError):
    """A setting that cannot work; raised before the first file is read."""


def no_space(error: BaseException | str) -> bool:
    """Whether a fault (an exception, or a reason recorded in words) is a full file system or quota."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in NO_SPACE)


def describe(error: BaseException) -> str:
    """An exception in one line, ``Type: message``; an operating-system fault (a full disk) by its errno
    and text, found along the chain of causes (pydicom re-raises it with a traceback in the message)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            where = f": {cause.filename}" if cause.filename else ""
            return f"{type(cause).__name__}: [Errno {cause.errno}] {cause.strerror}{where}"
        cause = cause.__cause__ or cause.__context__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
