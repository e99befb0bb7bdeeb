"""The CPU recipe, Stage 2: from this tag's Stage 1 result, SAM + neck + conv frozen, 10% text-only
rows, the full recipe's Stage 2 learning rate 3e-5 (dev/design.md §5), the same data as Stage 1.
At this scale Stage 2 measured no better than Stage 1 alone (dev/LOG.md), so it is short (100 steps):
it exists to freeze SAM and mix text as the full recipe does. Each value and why:
- base cpu: encoder_preset .. synth_cut_p, mode, seq_len, batch: presets/cpu.py's, so Stage 2 refines
  the same task and the eval measures what Stage 1 trained on.
- base mid: init_from stage1, freeze_sam, text_ratio 0.1, lr 3e-5, schedule step, no warmup: the
  published Stage 2 (SAM + neck + conv keep what Stage 1 learnt; the paper's 10% text-only rows).
- step_size 100, step_gamma 0.3 (x0.3 at step 100 = the end): a 100-step stage has no room for a
  second StepLR period.
- eval/save every 100: one eval and one checkpoint at the end.
- easy_steps, easy_fonts, matrix_lr, ctc_weight, ctc_features: back to the trainer's defaults (no
  curriculum, no Muon, no CTC head), which Stage 1's cpu preset changes."""
base = ["cpu", "mid"]
easy_steps = 0
easy_fonts = ""
num_steps = 100
matrix_lr = 0.0
step_size = 100
step_gamma = 0.3
ctc_weight = 0.0
ctc_features = "neck"
eval_every = 100
save_every = 100
