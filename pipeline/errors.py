"""The project's own error types: each names the file (or series) and the reason in one line."""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A file or series that cannot be processed. ``str()`` is one line: ``<path>: <reason>``."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the cause printed
        super().__init__(f"{self.path}: {self.reason}")


class ConfigError(ValueError):
    """A setting that cannot work; raised before the first file is read."""
