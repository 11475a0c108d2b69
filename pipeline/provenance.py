"""Provenance records: which tool, model, settings and sources produced an output folder."""
from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

from models.store import LoadedModel
from pipeline import TOOL_NAME, __version__
from pipeline.settings import Settings


def provenance(settings: Settings, model: LoadedModel, device: str, **extra: Any) -> dict[str, Any]:
    """A JSON-ready record; ``extra`` holds what is specific to the folder (source UIDs, ...).
    No patient attributes and no input paths (folder names may carry patient names)."""
    return {
        "tool": {"name": TOOL_NAME, "version": __version__},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": model.card.get("name"), "version": model.card.get("version"),
                  "file": model.path.name, "sha256": model.sha256,
                  "trained_window_hu": model.card.get("window_hu")},
        "settings": settings.as_dict(),
        "device": device,
        "environment": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                        "pydicom": pydicom.__version__, "platform": platform.platform()},
        **extra,
    }


def read_provenance(folder: Path) -> dict:
    """The provenance.json of a study output folder (raises OSError/ValueError when unreadable)."""
    return json.loads((Path(folder) / "provenance.json").read_text())
