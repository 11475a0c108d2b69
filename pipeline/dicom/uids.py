"""UID checks and the deterministic UIDs of derived objects (PS3.5 section 9)."""
from __future__ import annotations

import re
import uuid

# PS3.5 9.1: components of digits, no leading zero (except "0" itself), separated by ".", <= 64 chars.
_STRICT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Safe for a file-system path: digits and dots only. Some archives carry UIDs with leading zeros in a
# component; they are not valid UIDs but still cannot escape a folder.
_PATH_SAFE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(uid: object) -> bool:
    return isinstance(uid, str) and len(uid) <= 64 and bool(_STRICT.match(uid))


def path_safe_uid(uid: object, what: str = "UID") -> str:
    """Return ``uid`` if it may become a path component, else raise ``ValueError``."""
    s = str(uid) if uid is not None else ""
    if not (len(s) <= 64 and _PATH_SAFE.match(s)):
        raise ValueError(f"{what} {s[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return s


_NAMESPACE = uuid.UUID("6f1d0a52-3c0e-5b8e-9a43-2f2d1c6e7b10")


def uuid_uid(*parts: object) -> str:
    """A ``2.25.<UUID as integer>`` UID (PS3.5 B.2) from a name-based (version 5) UUID of ``parts``:
    the same parts always give the same UID, different parts practically never collide."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(map(str, parts))).int}"


def derived_uid(*parts: str) -> str:
    """UID of a derived object from its inputs (source UIDs, model hash, settings), so a rerun
    with the same inputs gives the same UIDs and another model or window gives new ones."""
    return uuid_uid("ct-denoise derived", *parts)
