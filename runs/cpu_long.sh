#!/usr/bin/env bash
# The long CPU recipe: speedrun.sh's model and data trained 4x longer (presets/cpu_long.toml, 16000
# Stage 1 steps: ~85 minutes on one core of an AMX Xeon, 2-3 hours on an AVX2-only CPU), then Stage 2,
# the realistic rows with Tesseract beside them, and the scaling curve: the run's own checkpoints at
# about 20, 40, 60, 90 and 120 minutes (those it reached) read every realistic row with the GPT and
# joint decoders, and the report card plots CER against training minutes with Tesseract's level drawn in.
#
#   bash runs/cpu_long.sh          # in the repository root, after speedrun.sh made the venv
#
# Killed? Run it again: both stages resume from their last checkpoint (--resume=True), finished
# evals are kept. Every 300-step checkpoint is kept (~30 MB each). Extra arguments go to both stages.
set -euo pipefail
cd "$(dirname "$0")/.."
export NANOOCR_BASE_DIR="${NANOOCR_BASE_DIR:-$HOME/.cache/nanoocr}"
BASE="$NANOOCR_BASE_DIR"
EVAL="$BASE/eval_cpu_long"  # beside the speedrun's eval/ and report/, not over them
VENV="${NANOOCR_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || { echo "runs/cpu_long.sh: no venv at $VENV: run 'bash speedrun.sh' first (it makes one)" >&2; exit 2; }
. "$VENV/bin/activate"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
[ -f "$BASE/tokenizer/tokenizer.pkl" ] || python -m scripts.tok_train
python -m scripts.vis_tok_train --preset=cpu_long --resume=True "$@"
python -m scripts.vis_tok_train --preset=cpu_long_mid --resume=True "$@"
TESS=False; command -v tesseract >/dev/null && TESS=True
# every realistic row (tasks/realistic.py), or the ones $ROWS names (tests/test_runs.py reads one)
ROWS="${ROWS:-$(python -c 'from tasks.realistic import ROWS; print(" ".join(ROWS))')}"
for row in $ROWS; do  # the finished model, as speedrun.sh evaluates its own
  out="$EVAL/realistic_$row.jsonl"
  [ -f "${out%.jsonl}.metrics.json" ] || python -m scripts.vision_eval --model="$BASE/vis_mid_checkpoints/cpu_long" \
    --data="realistic:$row" --tesseract=$TESS --out="$out"
done
# the scaling curve: the Stage 1 checkpoint nearest each target minute (from the run's own eval history)
STAGE1="$BASE/vis_tok_checkpoints/cpu_long"
STEPS=$(python - "$STAGE1" <<'PY'
import sys
from nanoocr.checkpoint_manager import committed_steps, load_meta
d = sys.argv[1]
steps = committed_steps(d)
minutes = {h["step"]: h["minutes"] for h in load_meta(d, steps[-1]).get("history", []) if h["step"] in steps}
picked = []
for target in (20, 40, 60, 90, 120):
    if minutes and target <= max(minutes.values()) + 5:
        step = min(minutes, key=lambda s: abs(minutes[s] - target))
        picked += [step] if step not in picked else []
print(" ".join(map(str, picked + ([steps[-1]] if steps[-1] not in picked else []))))
PY
)
for step in $STEPS; do
  for decoder in gpt joint; do  # both: which reads better changes along the run
    T=False; [ "$step" = "${STEPS##* }" ] && [ $decoder = gpt ] && T=$TESS  # Tesseract's level once
    for row in $ROWS; do
      out="$EVAL/scaling/s${step}_${row}_$decoder.jsonl"
      [ -f "${out%.jsonl}.metrics.json" ] || python -m scripts.vision_eval --model="$STAGE1" --step="$step" \
        --data="realistic:$row" --decoder=$decoder --tesseract=$T --out="$out"
    done
  done
done
python -m scripts.report --tag=cpu_long --evals="" --eval_dir="$EVAL" --out="$BASE/report_cpu_long"
echo "done: report at $BASE/report_cpu_long/report.md"
