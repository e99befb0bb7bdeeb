#!/usr/bin/env bash
# The CPU page recipe (issue: optical compression at nano scale): the renderer's 2-12-line pages read
# by the cpu_page DeepEncoder in four named modes (Tiny 16 / Small 25 / Base 64 / Large 100 vision
# tokens) and a 4-layer GPT; Stage 1 (presets/pages_cpu.toml) then Stage 2 (pages_cpu_mid), then the
# compression table on 256 test pages read in every mode, the reading-not-recalling checks, and the
# report card with precision against compression beside DeepSeek-OCR's published points.
#
#   bash runs/pages_cpu.sh          # in the repository root, after speedrun.sh made the venv
#
# Killed? Run it again: both stages resume from their last checkpoint (--resume=True), a finished
# eval is kept. Extra arguments go to both stages (e.g. --num_steps=100 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
export NANOOCR_BASE_DIR="${NANOOCR_BASE_DIR:-$HOME/.cache/nanoocr}"
BASE="$NANOOCR_BASE_DIR"
EVAL="$BASE/eval_pages_cpu"
VENV="${NANOOCR_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || { echo "runs/pages_cpu.sh: no venv at $VENV: run 'bash speedrun.sh' first (it makes one)" >&2; exit 2; }
. "$VENV/bin/activate"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
[ -f "$BASE/tokenizer/tokenizer.pkl" ] || python -m scripts.tok_train
python -m scripts.vis_tok_train --preset=pages_cpu --resume=True "$@"
python -m scripts.vis_tok_train --preset=pages_cpu_mid --resume=True "$@"
MODEL="$BASE/vis_mid_checkpoints/pages_cpu"
PAGES="${PAGES:-256}"
[ -f "$EVAL/pages.metrics.json" ] || python -m scripts.vision_eval --model="$MODEL" --data=synth:block --split=test \
  --limit="$PAGES" --mode=base,large,small,tiny --proof=True --out="$EVAL/pages.jsonl"
python -m scripts.report --tag=pages_cpu --evals=pages --eval_dir="$EVAL" --out="$BASE/report_pages_cpu"
