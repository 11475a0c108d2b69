"""PACS faults, each a one-line message naming the PACS (never its credentials) and what failed."""
from __future__ import annotations


class PacsError(Exception):
    """A PACS operation that failed. ``transient`` faults (connection refused, timeouts, HTTP 408,
    429, 502-504, an aborted or rejected association) are retried with back-off; others are not."""

    def __init__(self, message: str, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(" ".join(str(message).split()))


class PacsAuthError(PacsError):
    """The PACS refused our credentials or AE title: retrying cannot help, the whole run stops."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)
