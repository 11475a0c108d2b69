"""``python -m models.training.pack DEST``: copy the TRAINING parts of the real CT set and of the
real volumes (their files and manifest rows, nothing of the validation or test parts) into
``DEST/realct`` and ``DEST/realct_volumes``, for a training machine that has neither the sets nor a
network (a GPU machine behind a hospital's firewall). Train there with ``--realct-dir DEST/realct
--volumes-dir DEST/realct_volumes --no-validation``; export, which measures the validation parts,
where the whole sets are.

The packed sets give the same training slices as the whole ones: the real CT set is split by group
name, the volumes by series name order, and every training series comes before the validation and
test series in that order (checked here).
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from . import realct, volumes


def _copy(src: Path, dest: Path, rows: list[dict[str, str]]) -> tuple[int, int]:
    """``rows`` of ``src``'s manifest and their files into ``dest``; returns (files, bytes)."""
    if not rows:
        raise ValueError(f"{src}: no training files in its manifest")
    size = 0
    for row in rows:
        target = dest / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / row["file"], target)
        size += target.stat().st_size
    with open(dest / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows), size


def pack(dest: Path, realct_dir: str | Path = realct.DEFAULT_DIR,
         volumes_dir: str | Path = volumes.DEFAULT_DIR) -> dict[str, tuple[int, int]]:
    """Copy both training parts into ``dest``; returns set name -> (files, bytes)."""
    rows = [r for r in realct.manifest(realct_dir) if r["group"] in realct.SPLIT["train"]]
    out = {"realct": _copy(realct.resolve(realct_dir), dest / "realct", rows)}
    parts = volumes.split(volumes_dir)
    train = set(parts["train"])
    if any(name < max(train) for part in ("validation", "test") for name in parts[part]):
        raise ValueError(f"{realct.resolve(volumes_dir)}: a training series sorts after a held-out one; "
                         "packing the training series alone would change the split")
    rows = [r for r in volumes.manifest(volumes_dir) if r["series"] in train]
    out["realct_volumes"] = _copy(realct.resolve(volumes_dir), dest / "realct_volumes", rows)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path)
    p.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    p.add_argument("--volumes-dir", default=volumes.DEFAULT_DIR)
    args = p.parse_args(argv)
    for name, (files, size) in pack(args.dest, args.realct_dir, args.volumes_dir).items():
        print(f"{args.dest / name}: {files} training files, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
