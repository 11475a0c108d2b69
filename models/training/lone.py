"""``python -m models.training.lone``: a slice-context model with a second, 2-D network for lone
slices (a one-slice series, a slice cut off by gaps on both sides), written as one weights file plus
a model card whose figures are measured again.

    python -m models.training.lone STACKS.safetensors --lone LONE.safetensors --out W --model-version V
        [--level-rule EXPONENT,MAX_GAIN] [--lone-level-rule EXPONENT,MAX_GAIN] [--float16]
    python -m models.training.lone --split W --out STACKS.safetensors --lone-out LONE.safetensors
    python -m models.training.lone --flat CONTEXT_MODEL.safetensors --out LONE.safetensors

STACKS denoises every slice that has a neighbour; LONE (a 2-D model, or a slice-context model whose
first layer's slice channels are summed into one, which is what it computes on a lone slice) every
slice that has none. ``--float16`` stores the weights in half precision (half the file; the card's
figures are measured on the weights as stored, computed in float32). ``--lone-level-rule`` gives the
network for lone slices a rule of its own for blotchy noise (``lone_level_rule`` in the card; fitted by
``python -m bench.noise_level --calibrate --weights LONE``), where it was trained on other noise than
the stacks network; without it both networks are told by ``--level-rule``.

``--split`` writes the two networks of such a model apart, each with a card of its own (bit for bit the
tensors of W, its storage type kept): the stacks network, whose card names its training run as W's
does, and the 2-D network, a start for training either further (``--init-weights``) or for pairing
again. ``--flat`` writes the 2-D form of a slice-context model with one network (a start for a new
network for lone slices)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from models.autoencoder import DenoisingAutoencoder, collapse_slices, count_parameters
from models.store import LoadedModel, ModelLoadError, load_model, save_model
from pipeline.errors import ConfigError
from pipeline.inference.strength import LevelRule

from .__main__ import level_rule_arg
from .card import MODEL_VERSION, evaluate, input_text, rule_entry
from .config import config_from_card

log = logging.getLogger(__name__)


def lone_network(loaded: LoadedModel) -> DenoisingAutoencoder:
    """The 2-D network of ``loaded``: itself when it has no slice context, else its 2-D form
    (:func:`models.autoencoder.collapse_slices`)."""
    model = loaded.model
    if model.lone is not None:
        raise ConfigError(f"{loaded.path}: already holds a network for lone slices")
    if not model.context:
        return model
    config = {k: v for k, v in model.config.items() if k != "context"}
    flat = DenoisingAutoencoder(**config)
    flat.load_state_dict(collapse_slices(model.state_dict(), model))
    return flat.eval()


def pair(stacks_path: Path, lone_path: Path, out: Path, version: str = MODEL_VERSION,
         level_rule: LevelRule | None = None, dtype: torch.dtype | None = None,
         command: str | None = None, lone_level_rule: LevelRule | None = None,
         rule_fitted_by: str | None = None) -> dict[str, Any]:
    """Write the model of ``stacks_path`` with ``lone_path``'s network for lone slices to ``out``, with
    its card (``lone_level_rule``: that network's own rule for blotchy noise, where it differs;
    ``rule_fitted_by``: how the rules given were chosen, for the card); returns the card."""
    stacks, lone = load_model(stacks_path), load_model(lone_path)
    if not stacks.model.context or stacks.model.lone is not None:
        raise ConfigError(f"{stacks_path}: a network for lone slices goes with a slice-context model that has none")
    if "config" not in stacks.card.get("training", {}):
        raise ConfigError(f"{stacks_path}: its model card names no training config")
    if lone.card.get("window_hu") != stacks.card.get("window_hu"):
        raise ConfigError(f"{lone_path}: window {lone.card.get('window_hu')} differs from {stacks_path.name}'s "
                          f"{stacks.card.get('window_hu')}")
    flat = lone_network(lone)
    model = DenoisingAutoencoder(**stacks.model.config, lone=flat.config)
    state = dict(stacks.model.state_dict())
    state.update({f"lone.{k}": v for k, v in flat.state_dict().items()})
    if dtype is not None:  # measure what is stored
        state = {k: v.to(dtype).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state)
    model.eval()
    cfg = config_from_card(stacks.card["training"]["config"])
    training = dict(stacks.card["training"])
    training["lone_slices"] = {
        "weights": str(lone_path), "sha256": lone.sha256, "version": lone.card.get("version"),
        "how": ("slices without a neighbour (every channel of the stack the slice itself) go through this 2-D "
                "network; " + ("it is the model named here with its first layer's slice channels summed into one, "
                               "which is what that model computes on a lone slice" if lone.model.context
                               else "the model named here as it is")),
        "training": lone.card.get("training", {}),
        "command": command or f"python -m models.training.lone {stacks_path} --lone {lone_path}",  # this file's
    }
    card = {k: stacks.card[k] for k in ("name", "input", "window_hu") if k in stacks.card}
    architecture = dict(stacks.card.get("architecture", {}), parameters=count_parameters(model))
    architecture["description"] = (str(architecture.get("description", "")) + "; slices without a neighbour go "
                                   "through a second, 2-D network of the same kind (architecture under lone)"
                                   + (", which is also told the noise's blotchiness (1 - whiteness) as an input "
                                      "channel" if flat.whiteness_map else ""))
    card.update(version=version, architecture=architecture, training=training, evaluation=evaluate(model, cfg))
    if dtype is not None:
        card["weights_dtype"] = f"{str(dtype).removeprefix('torch.')} as stored, computed in float32"
    rule = level_rule or (LevelRule.from_card(stacks.card) if "level_rule" in stacks.card else None)
    if rule is not None:
        card["level_rule"] = (rule_entry(rule, rule_fitted_by) if level_rule is not None
                              else stacks.card["level_rule"])
    if lone_level_rule is not None and lone_level_rule != (rule or LevelRule()):
        card["lone_level_rule"] = rule_entry(lone_level_rule, rule_fitted_by)
    save_model(model, out, card, dtype=dtype)
    log.info("wrote %s (%s for stacks, %s for lone slices)", out, stacks.name, lone.name)
    return card


def _split_from(path: Path, loaded: LoadedModel, network: str, **more: Any) -> dict[str, Any]:
    """A card's ``split_from``: the model file one of its networks (or its 2-D form) was taken from."""
    return {"weights": str(path), "sha256": loaded.sha256, "version": loaded.card.get("version"),
            "network": network, **more}


def split(path: Path, stacks_out: Path, lone_out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the stacks network of the paired model at ``path`` to ``stacks_out`` and its 2-D network
    for lone slices to ``lone_out``, each with its card (the pair's, less the other network); returns
    the two cards. The tensors are the pair's as stored; the cards carry no figures (each network
    alone was not measured here) and name the file they came from."""
    loaded = load_model(path)
    model = loaded.model
    if model.lone is None:
        raise ConfigError(f"{path}: holds no network for lone slices; nothing to split")
    common = {k: loaded.card[k] for k in ("name", "input", "window_hu", "level_rule") if k in loaded.card}
    lone_rule = {"level_rule": loaded.card["lone_level_rule"]} if "lone_level_rule" in loaded.card else {}
    half = str(loaded.card.get("weights_dtype", "")).startswith("float16")
    training = dict(loaded.card.get("training", {}))
    lone_training = training.pop("lone_slices", {})
    architecture = {k: v for k, v in loaded.card.get("architecture", {}).items() if k != "lone"}
    architecture["description"] = str(architecture.get("description", "")).split("; slices without a neighbour")[0]
    stacks = DenoisingAutoencoder(**{k: v for k, v in model.config.items() if k != "lone"})
    stacks.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("lone.")})
    version = str(loaded.card.get("version", ""))
    cards = (dict(common, version=f"{version}-stacks", training=training,
                  architecture=dict(architecture, parameters=count_parameters(stacks)),
                  split_from=_split_from(path, loaded, "the network for slices with a neighbour")),
             dict(common, **lone_rule, version=f"{version}-lone",
                  input=input_text(0, model.lone.noise_map, model.lone.whiteness_map),
                  training=lone_training.get("training", {}),
                  architecture={"class": architecture.get("class"), "description": architecture["description"],
                                "parameters": count_parameters(model.lone)},
                  split_from=_split_from(path, loaded, "the 2-D network for slices without a neighbour",
                                         how=lone_training.get("how"), made_from=lone_training.get("weights"),
                                         made_from_version=lone_training.get("version"))))
    for net, out, card in ((stacks, stacks_out, cards[0]), (model.lone, lone_out, cards[1])):
        if half:
            card["weights_dtype"] = loaded.card["weights_dtype"]
        save_model(net, out, card, dtype=torch.float16 if half else None)
        log.info("wrote %s (%s of %s)", out, card["split_from"]["network"], path.name)
    return cards


def flatten(path: Path, out: Path) -> dict[str, Any]:
    """Write the 2-D form of the slice-context model at ``path`` (:func:`lone_network`: what it computes
    on a lone slice) to ``out``, with a card naming ``path``: a start for a network for lone slices
    (``--init-weights``). Returns the card."""
    loaded = load_model(path)
    if not loaded.model.context or loaded.model.lone is not None:
        raise ConfigError(f"{path}: not a slice-context model with one network (--split takes a pair apart)")
    flat = lone_network(loaded)
    card = {k: loaded.card[k] for k in ("name", "window_hu", "level_rule", "training") if k in loaded.card}
    card.update(version=f"{loaded.card.get('version', '')}-2d", input=input_text(0, flat.noise_map, flat.whiteness_map),
                architecture={"class": loaded.card.get("architecture", {}).get("class"),
                              "parameters": count_parameters(flat)},
                split_from=_split_from(path, loaded, "its 2-D form: the first layer's slice channels summed into one"))
    save_model(flat, out, card)
    log.info("wrote %s (the 2-D form of %s)", out, path.name)
    return card


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__ or "", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stacks", type=Path, nargs="?", help="exported slice-context weights (with their card beside them)")
    p.add_argument("--lone", type=Path, help="exported weights for slices without a neighbour")
    p.add_argument("--out", type=Path, required=True, help="the paired model; with --split its stacks network")
    p.add_argument("--split", type=Path, default=None, metavar="PAIR",
                   help="write the two networks of this paired model apart (--out and --lone-out)")
    p.add_argument("--lone-out", type=Path, default=None, help="with --split: where its 2-D network goes")
    p.add_argument("--flat", type=Path, default=None, metavar="CONTEXT_MODEL",
                   help="write the 2-D form of this slice-context model to --out (a start for a lone network)")
    p.add_argument("--model-version", default=MODEL_VERSION)
    p.add_argument("--level-rule", type=level_rule_arg, default=None, metavar="EXPONENT,MAX_GAIN",
                   help="the card's rule for blotchy noise (default: the stacks model's)")
    p.add_argument("--lone-level-rule", type=level_rule_arg, default=None, metavar="EXPONENT,MAX_GAIN",
                   help="the network for lone slices' own rule (default: the card's rule for both)")
    p.add_argument("--rule-fitted-by", default=None, metavar="TEXT",
                   help="how the rules given were chosen, for the card (default: the calibration)")
    p.add_argument("--float16", action="store_true", help="store the weights in half precision")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.split is not None:
        if args.stacks or args.lone or args.flat or args.lone_out is None:
            p.error("--split takes --out and --lone-out, and no other model")
    elif args.flat is not None:
        if args.stacks or args.lone or args.lone_out:
            p.error("--flat takes --out, and no other model")
    elif args.stacks is None or args.lone is None:
        p.error("give the stacks model and --lone, --split or --flat")
    command = " ".join(["python -m models.training.lone", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.split is not None:
            split(args.split, args.out, args.lone_out)
            return
        if args.flat is not None:
            flatten(args.flat, args.out)
            return
        pair(args.stacks, args.lone, args.out, args.model_version, args.level_rule,
             torch.float16 if args.float16 else None, command, args.lone_level_rule, args.rule_fitted_by)
    except (ConfigError, ModelLoadError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
