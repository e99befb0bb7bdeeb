#!/usr/bin/env bash
# The full-size recipe: DeepEncoder (SAM-B + CLIP-L) + a d20-class GPT, Stage 1 then Stage 2, on all
# visible GPUs (any number: total_batch_size is rows per step, split by common.batch_plan). Extra
# arguments go to both stages. It is meant to start from real weights (presets/full.toml stops without them):
#   bash runs/full.sh --encoder_weights=sam-vit-base/model.safetensors,clip-vit-large-patch14/model.safetensors \
#       --nanochat_dir=$HOME/.cache/nanochat/base_checkpoints/d20 --nanochat_tokenizer=$HOME/.cache/nanochat/tokenizer
# or, deliberately, from random init: bash runs/full.sh --from_scratch=True
# With --nanochat_dir the tokenizer is nanochat's. Otherwise <base>/tokenizer must have VOCAB_SIZE ids
# (default: presets/full.toml's tokenizer_vocab, 65536): it is trained when missing, and a tokenizer of
# another size there (e.g. the speedrun's 512 ids in the same NANOOCR_BASE_DIR) stops the run.
# tests/test_runs.py dry-runs this same script at a tiny size on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC="${NPROC:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
if [ "$NPROC" -gt 1 ]; then RUN="torchrun --standalone --nproc_per_node=$NPROC -m"; else RUN="python -m"; fi
BASE="${NANOOCR_BASE_DIR:-$HOME/.cache/nanoocr}"
VOCAB="${VOCAB_SIZE:-$(python -c 'from nanoocr.configurator import read_preset; print(read_preset("full")["tokenizer_vocab"])')}"
EXTRA=()
case " $* " in
  *" --nanochat_dir="*) ;;  # nanochat's own tokenizer comes with its GPT (load_nanochat_gpt checks they fit)
  *)
    if [ -f "$BASE/tokenizer/tokenizer.pkl" ]; then
      python - "$BASE/tokenizer" "$VOCAB" <<'PY'
import sys
from nanoocr.tokenizer import Tokenizer
tok = Tokenizer.from_directory(sys.argv[1])
have, want = tok.get_vocab_size(), int(sys.argv[2])  # ids as scripts.tok_train --vocab_size counts them
if have != want:
    sys.exit(f"runs/full.sh: {sys.argv[1]} holds a {have}-id tokenizer, the full recipe needs {want} "
             f"(VOCAB_SIZE / presets/full.toml tokenizer_vocab). It belongs to another recipe (the speedrun trains 512): "
             f"use a fresh NANOOCR_BASE_DIR, move that tokenizer away, pass --nanochat_dir=..., or set "
             f"VOCAB_SIZE={have} to use it on purpose.")
print(f"runs/full.sh: reusing the {have}-id tokenizer in {sys.argv[1]}")
PY
    else
      python -m scripts.tok_train --vocab_size="$VOCAB"
    fi
    EXTRA=(--tokenizer_vocab="$VOCAB")  # the training script checks it again (a tokenizer swapped in between)
    ;;
esac
$RUN scripts.vis_tok_train --preset=full --resume=True "${EXTRA[@]}" "$@"
$RUN scripts.vis_tok_train --preset=full_mid --resume=True "${EXTRA[@]}" "$@"
