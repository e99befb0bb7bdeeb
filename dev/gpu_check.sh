#!/usr/bin/env bash
# The GPU check: one script, at most ~8 minutes on one GPU, run first whenever a GPU is lent.
#
#   bash dev/gpu_check.sh                   # on a CUDA machine (a CUDA build of torch in the active env)
#   GPU_CHECK_CPU=1 bash dev/gpu_check.sh   # the same steps on the CPU at tiny dims (tests/test_gpu_path.py)
#
# Steps, each bounded: (1) the CUDA-only tests, if the suite has any (pytest -m cuda); (2) ~200 steps
# of the GPU speedrun preset (presets/gpu.toml: pages in Base mode) with one eval at the end; (3) ~20
# steps of the full-size preset (presets/full.toml) in bf16 from random init (--from_scratch=True);
# (4) generation at batch 1 and 16 from the step-(2) model; (5) its compression table and reading checks
# on test pages in three modes (nanoocr eval --mode=base,small,tiny --proof=True).
# Then a summary: samples/s, tokens/s, MFU against the GPU's bf16 peak (the progress lines say which
# peak), peak memory, the first val CER. Logs and checkpoints go under $NANOOCR_BASE_DIR (default: a
# fresh temp dir, so no other run's tokenizer or checkpoint is picked up).
set -euo pipefail
cd "$(dirname "$0")/.."
export NANOOCR_BASE_DIR="${NANOOCR_BASE_DIR:-$(mktemp -d -t nanoocr_gpu_check.XXXXXX)}"
BASE="$NANOOCR_BASE_DIR"
LOGS="$BASE/gpu_check"
mkdir -p "$LOGS"
T0=$(date +%s)

if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
  # the dry run: the same commands on the CPU, every size shrunk so the whole script takes < 1 minute
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  DEV=(--device_type=cpu --dtype=float32)
  TOK=(--max_chars=200000)
  FULL_TOK=(--vocab_size=300 --max_chars=200000)
  GPU_ARGS=(--encoder_size=cpu --gpt_depth=1 --gpt_n_embd=128 --gpt_n_head=2 --seq_len=320 --num_steps=2
            --device_batch_size=2 --total_batch_size=2 --warmup_steps=1 --easy_steps=0 --encoder_freeze_steps=0
            --eval_every=2 --cer_samples=2 --max_new_tokens=8 --save_every=2 --num_workers=0 --log_every=1)
  FULL_ARGS=(--encoder_size=cpu --gpt_depth=1 --gpt_n_embd=128 --gpt_n_head=2 --mode=32x256 --synth_kinds=line
             --seq_len=96 --num_steps=2 --device_batch_size=2 --total_batch_size=2 --tokenizer_vocab=300
             --num_workers=0 --log_every=1)
  GEN_TOKENS=4
  EVAL_ARGS=(--limit=2 --max_tokens=4 --mode=base,tiny --device_type=cpu)
  RUN_TESTS=0
else
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA GPU (a CPU build of torch? set GPU_CHECK_CPU=1 for the CPU dry run)')"
  DEV=(--device_type=cuda --dtype=bfloat16)
  TOK=(--max_chars=2000000)  # 512 ids need little text (the speedrun's tokenizer, faster)
  FULL_TOK=(--vocab_size=65536 --max_chars=5000000)  # nanochat's vocabulary size: lm_head costs what it will
  # 200 steps of the real preset; one eval at the end, answers capped at 256 tokens to bound its time
  GPU_ARGS=(--num_steps=200 --warmup_steps=50 --eval_every=200 --cer_samples=16 --max_new_tokens=256
            --save_every=200 --log_every=20 --time_limit_min=4)
  # 20 steps at the preset's own batch (64 rows, 16 micro-batches of 4 on one GPU): ~10 TFLOP a row
  # (d20 over ~2k tokens + SAM-B at 1024 px), so ~0.5-1 minute at 20-40% of the bf16 peak; the time
  # limit stops it (and saves) if the GPU is much slower than that
  FULL_ARGS=(--num_steps=20 --log_every=5 --time_limit_min=2.5 --tokenizer_vocab=65536)
  GEN_TOKENS=256
  EVAL_ARGS=(--limit=48 --max_tokens=512 --mode=base,small,tiny --device_type=cuda)
  RUN_TESTS=1
fi

echo "=== gpu_check: base $BASE ==="
# (1) CUDA-only tests (marked @pytest.mark.cuda); none is a fine answer, said out loud
if [ "$RUN_TESTS" = 1 ]; then
  N_CUDA=$(python -m pytest --collect-only -q -m cuda tests 2>/dev/null | grep -c "::" || true)
  if [ "$N_CUDA" -gt 0 ]; then timeout 120 python -m pytest -q -m cuda tests; else echo "cuda tests: none marked in the suite"; fi
fi

# (2) the GPU speedrun preset
python -m scripts.tok_train "${TOK[@]}" > "$LOGS/tok.log"
timeout 330 python -m scripts.vis_tok_train --preset=gpu --tag=gpu_check --overwrite=True "${DEV[@]}" "${GPU_ARGS[@]}" 2>&1 | tee "$LOGS/gpu.log"

# (3) the full-size preset from random init (its own tokenizer of its own size, in its own dir)
python -m scripts.tok_train "${FULL_TOK[@]}" --out_dir="$BASE/tokenizer_full" > "$LOGS/tok_full.log"
timeout 240 python -m scripts.vis_tok_train --preset=full --tag=full_check --from_scratch=True --overwrite=True \
  --tokenizer_dir="$BASE/tokenizer_full" --eval_every=0 --cer_samples=0 --save_every=0 \
  "${DEV[@]}" "${FULL_ARGS[@]}" 2>&1 | tee "$LOGS/full.log"

# (4) generation from the step-(2) model: batch 1 and 16, exactly GEN_TOKENS answer tokens per row
python - "$BASE/vis_tok_checkpoints/gpu_check" "$GEN_TOKENS" "${DEV[0]#--device_type=}" <<'PY' 2>&1 | tee "$LOGS/generate.log"
import sys, time
import torch
from nanoocr.checkpoint_manager import load_model
from nanoocr.engine import generate, preprocess
from nanoocr.modes import parse_mode
from nanoocr.synth import render
from scripts.bench_common import never_end
path, n_tokens, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model, tok, meta = load_model(path, device=device)
never_end(model, tok)  # every row generates exactly n_tokens: tokens/s measures the engine, not the model
mode = parse_mode(meta["user_config"]["mode"])
amp = torch.bfloat16 if device == "cuda" else None
pages = [preprocess(model, render(0, i, "page", split="val")[0], mode) for i in range(16)]
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
generate(model, tok, pages[:1], max_tokens=4, autocast_dtype=amp)  # warm-up
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
for batch in (1, 16):
    sync(); t0 = time.perf_counter()
    outs = generate(model, tok, pages[:batch], max_tokens=n_tokens, autocast_dtype=amp)
    sync(); dt = time.perf_counter() - t0
    n = sum(o["num_tokens"] for o in outs)
    assert n == batch * n_tokens, f"generated {n} tokens, expected {batch} x {n_tokens}"
    print(f"generate batch {batch}: {n / dt:,.1f} tokens/s ({n} tokens in {dt:.2f}s, mode {meta['user_config']['mode']})")
if device == "cuda":
    print(f"generate peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated")
PY

# (5) the compression table and the reading-not-recalling checks of the step-(2) model on test pages,
# in three modes (what runs/pages_cpu.sh measures on the CPU; after 200 steps expect no reading yet)
timeout 150 python -m scripts.vision_eval --model="$BASE/vis_tok_checkpoints/gpu_check" --data=synth:page --split=test \
  --proof=True --out="$LOGS/pages.jsonl" "${EVAL_ARGS[@]}" 2>&1 | tee "$LOGS/pages_eval.log"

# summary: the last progress line of each run, its eval line, its peak memory
echo
echo "=== gpu_check summary ($(( $(date +%s) - T0 ))s) ==="
for run in gpu full; do
  echo "[$run] $(grep -m1 '^MFU denominator' "$LOGS/$run.log" || echo 'no MFU line')"
  echo "[$run] $(grep '^step ' "$LOGS/$run.log" | tail -1 | sed 's/.*| \([0-9.,]* samples\/s\)/\1/' || true)"
  echo "[$run] $(grep '^peak memory' "$LOGS/$run.log" || echo 'no peak memory line')"
done
FIRST_CER=$(grep -m1 -o 'val_cer [0-9.]*' "$LOGS/gpu.log" || echo "val_cer missing")
echo "[gpu] first $FIRST_CER"
grep '^generate' "$LOGS/generate.log" | sed 's/^/[generate] /'
grep '^reading, not recalling' "$LOGS/pages_eval.log" | sed 's/^/[pages] /' || echo "[pages] no proof line"
