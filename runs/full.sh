#!/usr/bin/env bash
# The full-size recipe: DeepEncoder (SAM-B + CLIP-L) + a d20-class GPT, Stage 1 then Stage 2, on all
# visible GPUs. Extra arguments go to both stages, e.g. real weights:
#   bash runs/full.sh --encoder_weights=sam.safetensors,clip.safetensors \
#       --nanochat_dir=$HOME/.cache/nanochat/base_checkpoints/d20 --nanochat_tokenizer=$HOME/.cache/nanochat/tokenizer
# (with --nanochat_dir the tokenizer comes from nanochat; otherwise train one first: python -m scripts.tok_train --vocab_size=65536)
# tests/test_runs.py dry-runs this same script at a tiny size on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC="${NPROC:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
if [ "$NPROC" -gt 1 ]; then RUN="torchrun --standalone --nproc_per_node=$NPROC -m"; else RUN="python -m"; fi
[ -f "${NANOOCR_BASE_DIR:-$HOME/.cache/nanoocr}/tokenizer/tokenizer.pkl" ] || case " $* " in
  *" --nanochat_dir="*) ;;
  *) python -m scripts.tok_train --vocab_size="${VOCAB_SIZE:-65536}" ;;
esac
$RUN scripts.vis_tok_train --preset=full --resume=True "$@"
$RUN scripts.vis_mid_train --preset=full --resume=True "$@"
