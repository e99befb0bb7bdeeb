#!/usr/bin/env bash
# The main job: from a fresh clone to a model that reads text out of images, and a report card.
#
#   bash speedrun.sh                      # everything under $NANOOCR_BASE_DIR (default ~/.cache/nanoocr)
#   NANOOCR_BASE_DIR=/data/ocr bash speedrun.sh
#
# Steps: venv + install -> tokenizer -> synthetic test sets on disk -> Stage 1 -> Stage 2 -> eval
# -> report.md with plots. Every step is resumable: Ctrl-C saves a checkpoint, and running the
# command again skips what is done and resumes training where it stopped.
# On a CUDA machine the GPU preset is used, under torchrun when more than one GPU is visible.
set -euo pipefail
cd "$(dirname "$0")"
export NANOOCR_BASE_DIR="${NANOOCR_BASE_DIR:-$HOME/.cache/nanoocr}"
BASE="$NANOOCR_BASE_DIR"
mkdir -p "$BASE"
TIMES="$BASE/speedrun_times.tsv"

# ---- environment ------------------------------------------------------------------------------
VENV="${NANOOCR_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"  # CPU build here; see README for CUDA
pip install -q -e .

NGPU=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$NGPU" -gt 0 ]; then
  PRESET="${NANOOCR_PRESET:-gpu}"
  if [ "$NGPU" -gt 1 ]; then RUN="torchrun --standalone --nproc_per_node=$NGPU -m"; else RUN="python -m"; fi
else
  PRESET="${NANOOCR_PRESET:-cpu}"
  RUN="python -m"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
fi
echo "speedrun: preset=$PRESET gpus=$NGPU base=$BASE"

stage() {  # stage NAME COMMAND...: run a step, record its wall time
  local name=$1; shift
  echo; echo "=== $name ==="
  local t0=$(date +%s)
  "$@"
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >> "$TIMES"
}
[ -f "$TIMES" ] || : > "$TIMES"

# ---- tokenizer ------------------------------------------------------------------------------------
if [ ! -f "$BASE/tokenizer/tokenizer.pkl" ]; then
  stage tokenizer python -m scripts.tok_train
fi

# ---- a few test images on disk, to try `nanoocr read` on afterwards ---------------------------------------
if [ ! -f "$BASE/data/test_lines/samples.jsonl" ]; then
  python -m scripts.render_samples --kind=line --split=test --n=8 --out="$BASE/data/test_lines"
fi

# ---- training ---------------------------------------------------------------------------------------
stage stage1 $RUN scripts.vis_tok_train --preset="$PRESET" --resume=True
stage stage2 $RUN scripts.vis_tok_train --preset="${PRESET}_mid" --resume=True

# ---- evaluation and report ------------------------------------------------------------------------------
# unseen renderer test-split samples from the distribution the model trained on (eval reads the
# renderer settings from the checkpoint's config), then EXPECTED vs GENERATED for a few of them
MODEL="$BASE/vis_mid_checkpoints/$PRESET"
stage eval_lines python -m scripts.vision_eval --model="$MODEL" --data=synth --split=test --limit=256 \
  --out="$BASE/eval/lines.jsonl"
# real prose in font families the recipe never trains on, read the way `nanoocr read` reads a
# paragraph (cut into lines and word groups): how far the model generalises beyond the renderer
stage eval_prose python -m scripts.vision_eval --model="$MODEL" --data=prose --out="$BASE/eval/prose.jsonl"
# what users have (tasks/realistic.py): line crops clean / degraded / in held-out families,
# paragraphs, pages, phone photos, symbols and accents, and what scanners produce (1-bit lines and
# pages, 1-bit and fax G4 TIFF files, greyscale, tinted colour, pencil grey) -- read with `nanoocr
# read`'s default path, and by Tesseract on the same images when it is installed (apt-get install tesseract-ocr)
TESS=False; command -v tesseract >/dev/null && TESS=True
realistic() {
  for row in clean_lines degraded_lines unseen_fonts paragraphs pages photos symbols \
             bilevel_lines bilevel_pages tiff_pages fax_pages grey_scans colour_scans pencil_lines; do
    python -m scripts.vision_eval --model="$MODEL" --data="realistic:$row" --tesseract=$TESS \
      --out="$BASE/eval/realistic_$row.jsonl"
  done
}
stage eval_realistic realistic
python -m scripts.vision_sample --model="$MODEL" --data=synth --split=test --limit=6
python -m scripts.report --tag="$PRESET" --evals=lines,prose
echo
echo "done: report at $BASE/report/report.md"
echo "try:  . $VENV/bin/activate && nanoocr read $BASE/data/test_lines/images/"
