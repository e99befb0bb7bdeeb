"""The CPU recipe, Stage 2: from this tag's Stage 1 result, SAM + neck + conv frozen, 10% text-only
rows, the full recipe's Stage 2 learning rate 3e-5 (dev/design.md §5), the same data as Stage 1.
At this scale Stage 2 measured no better than Stage 1 alone (dev/LOG.md), so it is short (100 steps):
it exists to freeze SAM and mix text as the full recipe does. Each value and why:
- init_from stage1, freeze_sam: the published Stage 2 (SAM + neck + conv keep what Stage 1 learnt).
- encoder_preset .. synth_cut_p, mode, seq_len: presets/cpu.py's, so Stage 2 refines the same task
  and the eval measures what Stage 1 trained on.
- text_ratio 0.1: the paper's 10% text-only rows.
- lr 3e-5, schedule step (x0.3 at step 100 = the end), no warmup: the published Stage 2 rate; a
  100-step stage has no room for a second StepLR period.
- batch 16, eval/save every 100: Stage 1's batch; one eval and one checkpoint at the end."""
tag = "cpu"
init_from = "stage1"
freeze_sam = True
encoder_preset = "cpu"
seq_len = 128
data = "synth"
synth_kinds = "line"
synth_text_mix = 0.5
synth_max_words = 3
synth_fonts = "DejaVu Sans,DejaVu Serif,DejaVu Sans Mono,Liberation Sans,Liberation Serif,Liberation Mono,Liberation Sans Narrow,FreeSans,FreeSerif,FreeMono,Nimbus Roman,Nimbus Sans,Nimbus Mono PS,Nimbus Sans Narrow,C059,EB Garamond"
synth_degrade = "val"
synth_cut_p = 0.5
synth_cut_degrade = "train"
mode = "32x256"
text_ratio = 0.1
device_batch_size = 16
total_batch_size = 16
num_steps = 100
lr_encoder = 3e-5
lr_projector = 3e-5
lr_gpt = 3e-5
schedule = "step"
step_size = 100
step_gamma = 0.3
warmup_steps = 0
eval_every = 100
eval_batches = 2
cer_samples = 32
max_new_tokens = 40
save_every = 100
