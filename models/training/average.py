"""``python -m models.training.average``: the weighted mean of exported models of one architecture,
fine-tuned from one start, written as weights plus a model card whose figures are measured again.

    python -m models.training.average A.safetensors B.safetensors --out W --model-version V
        [--shares 0.5,0.5] [--level-rule EXPONENT,MAX_GAIN]

Two fine-tunes of one model that trade one figure against another (e.g. the white-noise rows against
the low-dose row) average into a model between them (a weight average). Each parent's card goes into
the new card whole, with its share and its sha256; the evaluation is measured on the averaged model.
A parent not told the noise's whiteness averages with one that is (grown from it): it counts as
taking the whiteness channel with zero weights, as the grown network started
(:func:`models.autoencoder.grow_state`); the average takes the channel."""
from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from models.autoencoder import grow_state
from models.store import LoadedModel, ModelLoadError, load_model, save_model
from pipeline.errors import ConfigError
from pipeline.inference.strength import LevelRule

from .__main__ import level_rule_arg
from .card import MODEL_VERSION, evaluate, rule_entry
from .config import config_from_card

log = logging.getLogger(__name__)


def average_states(states: list[dict[str, torch.Tensor]], shares: list[float]) -> dict[str, torch.Tensor]:
    """Each tensor the share-weighted mean of the parents' (computed in float64, stored as the first
    parent's dtype); integer tensors (counters) are the first parent's."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            mean = sum(s * state[key].double() for s, state in zip(shares, states))
            out[key] = mean.to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def _shares(count: int, shares: list[float] | None) -> list[float]:
    if shares is None:
        return [1.0 / count] * count
    if len(shares) != count:
        raise ConfigError(f"{count} parent models but {len(shares)} shares")
    if min(shares) <= 0 or abs(sum(shares) - 1.0) > 1e-6:
        raise ConfigError(f"shares must be positive and sum to 1, got {shares}")
    return list(shares)


def _without_whiteness(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "whiteness_map"}


def _check_alike(parents: list[tuple[Path, LoadedModel]]) -> None:
    """Parents must share architecture (the whiteness channel apart), parameter names and window; each
    needs its training config."""
    first_path, first = parents[0]
    keys = set(first.model.state_dict())
    for path, p in parents:
        if "config" not in p.card.get("training", {}):
            raise ConfigError(f"{path}: its model card names no training config")
        if path is first_path:
            continue
        for what, mine, theirs in (("architecture", _without_whiteness(p.model.config),
                                    _without_whiteness(first.model.config)),
                                   ("window_hu", p.card.get("window_hu"), first.card.get("window_hu")),
                                   ("parameters", set(p.model.state_dict()), keys)):
            if mine != theirs:
                raise ConfigError(f"{path}: {what} differs from {first_path.name}'s; only models of one "
                                  "architecture and window average")


def average(paths: list[Path], out: Path, version: str = MODEL_VERSION, shares: list[float] | None = None,
            level_rule: LevelRule | None = None, command: str | None = None) -> dict[str, Any]:
    """Write the weighted mean of the models at ``paths`` to ``out`` with its card; returns the card."""
    if len(paths) < 2:
        raise ConfigError(f"averaging needs at least two models, got {len(paths)}")
    weights = _shares(len(paths), shares)
    parents = [(Path(p), load_model(p)) for p in paths]
    _check_alike(parents)
    first = parents[0][1]
    told = next((p for _, p in parents if p.model.whiteness_map), first)  # the architecture of the average
    model = copy.deepcopy(told.model)
    grown = [i + 1 for i, (_, p) in enumerate(parents) if p.model.whiteness_map != model.whiteness_map]
    states = [grow_state(p.model.state_dict(), model) if i + 1 in grown else p.model.state_dict()
              for i, (_, p) in enumerate(parents)]  # grow_state reads model, never writes it
    model.load_state_dict(average_states(states, weights))
    cfg_dict = first.card["training"]["config"]
    cfg = config_from_card(cfg_dict)  # the evaluation's data settings
    training: dict[str, Any] = {k: first.card["training"][k] for k in ("data", "targets", "sources")
                                if k in first.card["training"]}
    training.update({
        "method": "weight average: each tensor the share-weighted mean of the parents' below (one architecture, "
                  "fine-tuned from one start)"
                  + "".join(f"; parent {i}, not told the noise's whiteness, counted with zero weights on the "
                            "whiteness channel (as a network grown that channel starts)" for i in grown),
        "noise": "; ".join(f"parent {i + 1} (share {s:g}): {p.card['training'].get('noise', '?')}"
                           for i, ((_, p), s) in enumerate(zip(parents, weights))),
        "parents": [{"weights": str(path), "sha256": p.sha256, "version": p.card.get("version"), "share": s,
                     "training": p.card["training"]} for (path, p), s in zip(parents, weights)],
        "hours": round(sum(float(p.card["training"].get("hours", 0.0)) for _, p in parents), 2),
        "config": cfg_dict,
        "config_from": "parent 1's training config, the data settings of this card's evaluation; each parent's own "
                       "config is in its entry under parents",
        "command": command or "python -m models.training.average " + " ".join(map(str, paths)),
    })
    card = {k: told.card[k] for k in ("name", "architecture", "input", "window_hu") if k in told.card}
    card.update(version=version, training=training, evaluation=evaluate(model, cfg))
    if level_rule is not None:
        card["level_rule"] = rule_entry(level_rule)
    save_model(model, out, card)
    log.info("wrote %s (%s)", out, ", ".join(f"{s:g} x {p}" for p, s in zip(paths, weights)))
    return card


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__ or "", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parents", type=Path, nargs="+", help="exported weights (each with its card beside it)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shares", type=lambda t: [float(v) for v in t.split(",")], default=None,
                   help="comma-separated, one per parent, summing to 1 (default: equal)")
    p.add_argument("--model-version", default=MODEL_VERSION)
    p.add_argument("--level-rule", type=level_rule_arg, default=None, metavar="EXPONENT,MAX_GAIN",
                   help="the card's rule for blotchy noise (bench.noise_level --calibrate prints it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = " ".join(["python -m models.training.average", *(sys.argv[1:] if argv is None else argv)])
    try:
        average(args.parents, args.out, args.model_version, args.shares, args.level_rule, command)
    except (ConfigError, ModelLoadError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
