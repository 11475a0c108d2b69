"""Weights on disk: safetensors (no pickle) plus a JSON model card beside them. Imports nothing of the
pipeline: networks and their files are the bottom layer."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from .autoencoder import DenoisingAutoencoder


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (hidden sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.tmp-", delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "ct_denoiser.safetensors"


class ModelLoadError(RuntimeError):
    """The weights file is missing, unreadable or does not match its model card."""


@dataclass(frozen=True)
class LoadedModel:
    model: DenoisingAutoencoder
    card: dict[str, Any]
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.card.get('name', 'unknown')} {self.card.get('version', '?')}"


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: DenoisingAutoencoder, weights: Path, card: dict[str, Any],
               dtype: torch.dtype | None = None) -> None:
    """Write ``weights`` (safetensors, architecture in its metadata; floating tensors as ``dtype``,
    default as they are) and its card, atomically."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    meta = {"architecture": json.dumps(model.config), "name": str(card.get("name", "")),
            "version": str(card.get("version", ""))}
    _replace(weights, save(state, metadata=meta))
    full = dict(card, architecture=dict(card.get("architecture", {}), **model.config),
                weights_file=weights.name, weights_sha256=sha256_file(weights))

    _replace(card_path(weights), (json.dumps(full, indent=2, default=str) + "\n").encode())


def load_model(weights: Path | str | None = None) -> LoadedModel:
    """Load weights without pickle; the architecture comes from the card (or the file's metadata)."""
    path = Path(weights) if weights else SHIPPED_WEIGHTS
    if not path.is_file():
        raise ModelLoadError(f"{path}: model weights not found")
    cpath = card_path(path)
    card: dict[str, Any] = json.loads(cpath.read_text()) if cpath.is_file() else {}
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from exc
    arch = card.get("architecture")
    if not arch:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            arch = json.loads((f.metadata() or {}).get("architecture", "{}"))
    kwargs = _network_args(arch)
    try:
        model = DenoisingAutoencoder(**kwargs)
        model.load_state_dict(state, strict=True)  # weights stored as float16 are computed in float32
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: weights do not match architecture {kwargs}: {exc}") from exc
    model.eval()
    digest = sha256_file(path)
    if card.get("weights_sha256") and card["weights_sha256"] != digest:
        raise ModelLoadError(f"{path}: sha256 {digest} differs from its model card ({card['weights_sha256']})")
    return LoadedModel(model=model, card=card, path=path, sha256=digest)


def _network_args(arch: dict[str, Any]) -> dict[str, Any]:
    """The network's constructor arguments from a card's (or a file's) architecture entry."""
    kwargs: dict[str, Any] = {k: int(arch[k]) for k in ("width", "levels", "convs_per_level", "blocks", "context")
                              if k in arch}
    kwargs["noise_map"] = bool(arch.get("noise_map", False))
    if arch.get("whiteness_map"):
        kwargs["whiteness_map"] = True
    if isinstance(arch.get("lone"), dict):
        kwargs["lone"] = _network_args(arch["lone"])
    return kwargs


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict[str, Any]) -> None:
    """Model and Adam state as tensors in one safetensors file; scalars in its JSON metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, val in st.items():
            tensors[f"optim.{idx}.{key}"] = (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu().contiguous()
    metadata = {"meta": json.dumps(meta), "param_groups": json.dumps(opt["param_groups"])}
    _replace(path, save(tensors, metadata=metadata))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns its ``meta`` dict."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
    tensors = load_file(str(path), device="cpu")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(md["param_groups"])})
    return json.loads(md["meta"])
