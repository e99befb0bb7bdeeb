"""The CPU recipe, Stage 1 (dev/LOG.md has the experiments behind every value): one-line strips
32x256 read by the cpu encoder preset (patch 8, one stride-2 conv -> 2x16 = 32 vision tokens,
~0.7 characters per token), a 3-layer 192-wide GPT, a 512-id tokenizer. Half the lines are random
strings so the decoder cannot guess text without reading.
An auxiliary CTC loss on the projected vision tokens (nanoocr/ctc.py, 2 frames per token column)
tells the encoder from step 0 which characters each token holds: without it the encoder either
collapses within ~50 steps (notes/cpu-recipe-probe.md) or, frozen for the first 300 steps,
learns slowly (CER 0.83 after 2400 steps; with CTC 0.52 on the neck, better on the tokens).
The first 600 steps render clean DejaVu Sans only (a curriculum), then six fonts with mild
degradations.
The GPT blocks' matrices train with Muon (nanoocr/muon.py, lr 0.02; the rest AdamW 1e-3): at step
1200 val CER 0.50 vs 0.65 with AdamW alone (about 1.45x fewer steps for the same loss) for ~21%
more time per step on 2 cores, so Stage 1 runs 2800 steps instead of 3600 in the same time."""
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
synth_fonts = "DejaVu Sans,DejaVu Serif,Liberation Sans,Liberation Serif,Liberation Mono,FreeSans"
synth_degrade = "val"
mode = "32x256"
device_batch_size = 16
total_batch_size = 16
num_steps = 2800
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
