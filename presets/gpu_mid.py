"""The speedrun on GPUs, Stage 2 (dev/design.md §5's shape, at the GPU Stage 1's scale): from Stage 1's
result, SAM + neck + convs frozen, 10% text-only rows, the same pages in the same Base mode.
Each value and why:
- init_from stage1, freeze_sam: DeepSeek-OCR's Stage 2 keeps the high-resolution front end that
  learnt to see and spends the rest on CLIP, projector and GPT.
- text_ratio 0.1: the paper's 10% text rows keep the GPT a language model.
- lr 1e-4 (AdamW) and matrix_lr 0.004 (Muon): a fifth of Stage 1's peaks, as the published recipe goes
  from 5e-5 to 3e-5 at a lower point of a decayed schedule; fresh optimiser state, so no warmup
  would let the first steps undo Stage 1 (warmup 50 steps only to fill AdamW's second moments).
- schedule step, x0.3 every 500 steps: the published StepLR shape, shortened to this stage's 1000
  steps (about 10 minutes on one H200 at Stage 1's rate), so its last third runs at 0.3x.
- base gpu: data, mode, seq_len, batch, workers: Stage 1's, so the eval measures the same task.
- base mid: init_from, freeze_sam, text_ratio, schedule step (overridden here where it differs).
- gpt_depth, gpt_n_embd, easy_steps, easy_fonts, encoder_freeze_steps, encoder_rewarmup,
  time_limit_min: back to the trainer's defaults (the model's shape comes from the Stage 1
  checkpoint; no curriculum, no encoder freeze, no time limit), which Stage 1's gpu preset changes."""
base = ["gpu", "mid"]
gpt_depth = 3
gpt_n_embd = 0
easy_steps = 0
easy_fonts = ""
encoder_freeze_steps = 0
encoder_rewarmup = 100
time_limit_min = 0.0
num_steps = 1000
lr_encoder = 1e-4
lr_projector = 1e-4
lr_gpt = 1e-4
matrix_lr = 0.004
step_size = 500
step_gamma = 0.3
warmup_steps = 50
eval_every = 500
save_every = 500
