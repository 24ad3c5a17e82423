#!/usr/bin/env bash
# The main job on a small real example (Strecha Herz-Jesu facade, ../shared/data):
# build a landmark map from the 13 map images, localize the 12 query images, evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
ROOT=$DATA/strecha_herzjesu_P25
pramloc build-map --dataset strecha --root "$ROOT" --split "$ROOT/splits/db.txt" \
  --out maps/herzjesu --train-minutes 1 --overwrite
pramloc info maps/herzjesu
pramloc localize maps/herzjesu --dataset strecha --root "$ROOT" --queries "$ROOT/splits/query.txt" \
  --out outputs/herzjesu/results.txt
pramloc evaluate outputs/herzjesu/results.txt --dataset strecha --root "$ROOT" \
  --queries "$ROOT/splits/query.txt" --json outputs/herzjesu/eval.json --plot outputs/herzjesu/errors.png
