"""The CPU recipe, Stage 1 (dev/LOG.md has the experiments behind every value): one-line strips
32x256 read by the cpu encoder preset (patch 8, one stride-2 conv -> 2x16 = 32 vision tokens,
~0.7 characters per token), a 3-layer 192-wide GPT, a 512-id tokenizer. The encoder (and
projector) stay at lr 0 for the first 300 steps and then re-warm: trained from step 0 the encoder
collapses to image-independent features within ~50 steps (notes/cpu-recipe-probe.md).
Half the lines are random strings so the decoder cannot guess text without reading."""
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
num_steps = 2400
lr_encoder = 1e-3
lr_projector = 1e-3
lr_gpt = 1e-3
weight_decay = 0.01
schedule = "cosine"
warmup_steps = 100
final_lr_frac = 0.1
easy_steps = 600
easy_fonts = "DejaVuSans.ttf"
encoder_freeze_steps = 300
encoder_rewarmup = 100
eval_every = 300
eval_batches = 2
cer_samples = 32
max_new_tokens = 40
save_every = 300
