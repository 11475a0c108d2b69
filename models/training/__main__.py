"""``python -m models.training``: train (or resume) a run, or export its checkpoint as shipped
weights with a model card."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from models.autoencoder import count_parameters
from pipeline.errors import ConfigError
from pipeline.inference.strength import LevelRule

from .card import MODEL_VERSION, export
from .config import TrainConfig, load_config
from .train import build_model, train

log = logging.getLogger("models.training")
EXPORT_ONLY = ("--export", "--level-rule", "--model-version")


def _command_without_export(argv: list[str]) -> str:
    """The training command behind an export command line: ``argv`` without its export options."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.split("=")[0] in EXPORT_ONLY and "=" in arg:
            skip = False
            continue
        skip = arg in EXPORT_ONLY
        if not skip:
            kept.append(arg)
    return " ".join(["python -m models.training", *kept])


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def level_rule_arg(text: str) -> LevelRule:
    try:
        exponent, max_gain = (float(v) for v in text.split(","))
        return LevelRule(exponent, max_gain)
    except (ValueError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(f"expected EXPONENT,MAX_GAIN (e.g. 0.5,1.5), got {text!r}: {exc}") from None


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The command line's options and the training settings they make (config file, then flags)."""
    p = argparse.ArgumentParser(description=__doc__ or "", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--config", type=Path, default=None,
                   help="JSON file of training settings (e.g. models/configs/ct_denoiser.json); flags override it")
    p.add_argument("--export", type=Path, help="write weights + model card from the run's checkpoint")
    p.add_argument("--model-version", default=MODEL_VERSION,
                   help=f"with --export: the card's version (default {MODEL_VERSION}; name a candidate apart)")
    p.add_argument("--level-rule", type=level_rule_arg, default=None, metavar="EXPONENT,MAX_GAIN",
                   help="with --export: the card's rule for blotchy noise (bench.noise_level --calibrate prints it)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--workers", type=int, default=0,
                   help="processes making the batches (the same batches as with none; 0: this process)")
    p.add_argument("--no-validation", action="store_true",
                   help="log no validation PSNR (a machine without the validation data; --export measures it)")
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=_flag if isinstance(f.default, bool) else type(f.default),
                       default=None, help=f"default {f.default!r}")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    except (OSError, ValueError) as exc:  # a missing or bad settings file, a bad value: one line (no usage)
        p.exit(2, f"python -m models.training: error: {exc}\n")
    return args, cfg


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export:
        export(cfg, args.run_dir, args.export, command=_command_without_export(sys.argv[1:] if argv is None else argv),
               level_rule=args.level_rule, version=args.model_version)
        return
    last = train(cfg, args.run_dir, max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                 device=args.device, workers=args.workers, validate=not args.no_validation)
    log.info("finished: %s (%d parameters)", last, count_parameters(build_model(cfg)))


if __name__ == "__main__":
    main()
