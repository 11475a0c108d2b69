#!/usr/bin/env bash
# A time-boxed training run on a machine that has neither the data sets nor a network (a GPU machine
# behind a firewall), from the repository root:
#
#   bash models/training/offline_run.sh CONFIG RUN_DIR MINUTES DATA_DIR [WHEELS_DIR]
#
# DATA_DIR: what `python -m models.training.pack DATA_DIR` wrote where the sets are (their training
# parts only). WHEELS_DIR (optional): wheels of the packages that machine lacks (pydicom, pylibjpeg,
# pylibjpeg-openjpeg for the JPEG 2000 sets), installed into a folder of their own.
# The run's steps are set so that it ends in about MINUTES: the configuration's own training steps are
# timed first (bench.train_rate, RATE_SECONDS, default 20), and the steps are what fits in 93 % of
# MINUTES, so the learning rate completes its schedule; `--max-minutes` (MINUTES + 2) stops it with a
# checkpoint if the machine slows down. The run folder then holds the checkpoint, config.json (the
# configuration with the packed data's folders, so a resume finds them) and train_log.csv; export it
# where the whole sets are (docs/model.md, "Training on an offline GPU machine").
# DEVICE (default cuda) and WORKERS (default: the CPU count less one) choose where and how many
# processes make the batches.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 CONFIG RUN_DIR MINUTES DATA_DIR [WHEELS_DIR]" >&2
    exit 2
fi
config=$1 run=$2 minutes=$3 data=$4 wheels=${5:-}
device=${DEVICE:-cuda}
workers=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 0 ))}
for d in "$data/realct" "$data/realct_volumes"; do
    [ -f "$d/manifest.csv" ] || { echo "$d/manifest.csv: not there (run python -m models.training.pack $data)" >&2; exit 2; }
done
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/ct-denoise-site "$wheels"/*.whl
    export PYTHONPATH=/tmp/ct-denoise-site${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$run"
packed="$run/packed_config.json"
python3 - "$config" "$data" "$packed" <<'EOF'
import json, sys
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
data = Path(sys.argv[2]).resolve()
cfg.update(realct_dir=str(data / "realct"), volumes_dir=str(data / "realct_volumes"))
Path(sys.argv[3]).write_text(json.dumps(cfg, indent=2) + "\n")
EOF
if [ -f "$run/checkpoint.safetensors" ]; then
    steps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'])" "$run/config.json")
    echo "resuming $run (steps $steps)"
else
    rate=$(python3 -m bench.train_rate --config "$packed" --device "$device" --workers "$workers" \
        --seconds "${RATE_SECONDS:-20}" | awk -F'|' '$2 ~ /^ *[0-9]+ *$/ {gsub(/ /, "", $3); print $3; exit}')
    steps=$(python3 -c "import sys; print(max(1, int(float(sys.argv[1]) * 60 * float(sys.argv[2]) * 0.93)))" \
        "$rate" "$minutes")
    echo "$rate steps/s on $device with $workers batch workers: $steps steps in $minutes min"
fi
python3 -m models.training --run-dir "$run" --config "$packed" --steps "$steps" --device "$device" \
    --workers "$workers" --no-validation \
    --max-minutes "$(python3 -c "import sys; print(float(sys.argv[1]) + 2)" "$minutes")"
