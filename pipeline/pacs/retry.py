"""Transient PACS faults are retried with exponential back-off; the others fail at once."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pipeline.pacs.errors import PacsError

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_retries(op: Callable[[], T], what: str, retries: int, backoff_seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``op()``; on a transient :class:`PacsError` wait ``backoff_seconds`` (doubling each time) and
    try again, at most ``retries`` more times. The last error is re-raised with the number of
    attempts; a permanent error is raised at once."""
    wait = backoff_seconds
    for attempt in range(retries + 1):
        try:
            return op()
        except PacsError as exc:
            if not exc.transient or attempt == retries:
                if exc.transient:
                    raise PacsError(f"{exc} (gave up after {attempt + 1} attempts)", transient=True) from exc
                raise
            log.warning("%s: %s; retrying in %.1f s (%d of %d)", what, exc, wait, attempt + 1, retries)
            sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")
