"""The speedrun on one or more CUDA GPUs, Stage 1: the original system's task -- WHOLE PAGES read in
DeepSeek-OCR's Base mode (1024 px, 256 vision tokens + 16 newlines + 1 separator) by the real
DeepEncoder structure (SAM-style windowed ViT -> two stride-2 convs, 16x fewer tokens -> CLIP-style ViT
-> projector) at the "gpu" encoder size (nanoocr/deepencoder.py: SAM 384 x 6, CLIP 512 x 6), and an
8-layer 512-wide GPT. Sized for one H100/H200 in about an hour (Stage 2 adds ~10 minutes); more GPUs
split the same 64 rows per step (common.batch_plan), fewer minutes. Not yet run on a GPU: every number
below is a reasoned choice, not a measured optimum.
- Data: Fox-style pages 3 : receipts 1 : one-line strips 1 (synth.py kinds). The strips are the
  curriculum inside the mix: short, dense, left-to-right targets that make the encoder read from step 0
  (the CPU recipe's lesson, dev/design.md §9), while pages and receipts are the task.
- No auxiliary CTC: it reads one line left to right (nanoocr/ctc.py) and needs fixed strips
  (mode=HxW); a page is many lines in columns. Its job here -- keeping the encoder image-specific
  early (dev/design.md §9.1) -- is done by the probe's other cure, a short encoder freeze, plus the strips.
- Muon (matrix_lr) for the GPT blocks' matrices as nanochat trains them: on CPU it reached a given
  loss in fewer steps (dev/LOG.md c7); in bf16 on a GPU its Newton-Schulz costs little
  next to a 64-page step. The encoder stays on AdamW (unmeasured with Muon at this size).
- lr 5e-4 (AdamW): half the CPU recipe's 1e-3, for 2-3x wider matrices; warmup 500 steps.
- A curriculum at the start: the first easy_steps render clean DejaVu Sans only (no degradations),
  as the CPU recipe does, then every shipped font and the train split's degradations.
- seq_len 2048: 273 placeholders + prompt + ~1760 answer tokens, so nearly every rendered page is
  read whole (longer ones are truncated, counted); the page-length measurement: dev/LOG.md "Histories moved out of docstrings".
- Steps: 14 workers feed ~300 rows/s, so 10000 steps x 64 rows take ~35-70 minutes (the renderer
  timings: dev/LOG.md "Histories moved out of docstrings"); time_limit_min stops (and saves) at 100 minutes whatever the rate
  is, and Stage 2 starts from that checkpoint."""
tag = "gpu"
encoder_preset = "gpu"
gpt_depth = 8
gpt_n_embd = 512
gpt_n_head = 4
seq_len = 2048
proj_std = 0.02
data = "synth"
synth_kinds = "page:3,receipt:1,line:1"
synth_degrade = "train"
mode = "base"
device_batch_size = 32
total_batch_size = 64
num_steps = 10000
lr_encoder = 5e-4
lr_projector = 5e-4
lr_gpt = 5e-4
matrix_lr = 0.02
warmup_steps = 500
schedule = "cosine"
final_lr_frac = 0.1
easy_steps = 1000
easy_fonts = "DejaVuSans.ttf"
encoder_freeze_steps = 200
encoder_rewarmup = 200
ctc_weight = 0.0
eval_every = 1000
eval_batches = 2
cer_samples = 16
max_new_tokens = 1760
save_every = 1000
num_workers = 14
time_limit_min = 100.0
