"""Benchmark figures recorded in the model card of the weights they measured."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.store import LoadedModel
from pipeline.atomic import write_json


def record(card_path: Path, loaded: LoadedModel, section: str, key: str | None, figures: dict[str, Any]) -> None:
    """Set ``evaluation[section][key]`` (``evaluation[section]`` when ``key`` is None) of the card at
    ``card_path`` to ``figures`` (the card rewritten atomically, its other entries kept). The card must
    be that of the weights measured (its ``weights_sha256``): figures of one model never land in
    another's card."""
    card = json.loads(card_path.read_text())
    if card.get("weights_sha256") != loaded.sha256:
        raise SystemExit(f"{card_path}: the card of weights {str(card.get('weights_sha256'))[:16]}, not of the "
                         f"weights measured ({loaded.path}, {loaded.sha256[:16]}); figures not recorded")
    evaluation = card.setdefault("evaluation", {})
    if key is None:
        evaluation[section] = figures
    else:
        evaluation.setdefault(section, {})[key] = figures
    write_json(card_path, card)
