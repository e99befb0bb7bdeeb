"""The CPU recipe, Stage 1: one-line strips 32x256 read by the cpu encoder preset (patch 8, one
stride-2 conv -> 2x16 = 32 vision tokens, ~0.7 characters per token), a 3-layer 192-wide GPT, a
512-id tokenizer. Why each value is what it is: dev/LOG.md (c1-c9, r1 on).
- Half the lines are random strings, so the decoder cannot guess text without reading.
- An auxiliary CTC loss on the projected vision tokens (nanoocr/ctc.py) tells the encoder from step 0
  which characters each token holds (without it the encoder collapses or learns slowly).
- The first 600 steps render clean DejaVu Sans only (a curriculum), then 16 shipped families. Half
  the lines are strips with mild scan degradations; the other half are drawn 1-2x larger with the
  renderer's train-split degradations (tilt up to 3 degrees, blur, noise, salt and pepper, JPEG
  down to quality 20) and cut back to the strip by the reader's own cutter (nanoocr/strips.py,
  which cleans and levels them), so the model trains on what `nanoocr read` gives it.
- Five families ship but are never drawn here (tasks/realistic.py HELD_OUT_FAMILIES): the unseen-fonts
  check and the prose set use them.
- The GPT blocks' matrices train with Muon (nanoocr/muon.py): fewer steps for a given loss (dev/LOG.md c7)."""
tag = "cpu"
encoder_preset = "cpu"
gpt_depth = 3
gpt_n_head = 4
seq_len = 128
proj_std = 0.02
data = "synth"
synth_kinds = "line"
synth_text_mix = 0.5
synth_max_words = 3
synth_fonts = "DejaVu Sans,DejaVu Serif,DejaVu Sans Mono,Liberation Sans,Liberation Serif,Liberation Mono,Liberation Sans Narrow,FreeSans,FreeSerif,FreeMono,Nimbus Roman,Nimbus Sans,Nimbus Mono PS,Nimbus Sans Narrow,C059,EB Garamond"
synth_degrade = "val"
synth_cut_p = 0.5
synth_cut_degrade = "train"
mode = "32x256"
device_batch_size = 16
total_batch_size = 16
num_steps = 4000
lr_encoder = 1e-3
lr_projector = 1e-3
lr_gpt = 1e-3
weight_decay = 0.01
matrix_lr = 0.02
schedule = "cosine"
warmup_steps = 100
final_lr_frac = 0.1
easy_steps = 600
easy_fonts = "DejaVuSans.ttf"
encoder_freeze_steps = 0
ctc_weight = 1.0
ctc_features = "tokens"
encoder_rewarmup = 100
eval_every = 300
eval_batches = 2
cer_samples = 32
max_new_tokens = 40
save_every = 300
