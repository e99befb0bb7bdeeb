"""The CPU recipe, Stage 2: from this tag's Stage 1 result, SAM + neck + conv frozen, 10% text-only
rows and DESIGN §5's learning rate 3e-5 (Stage 1 ends its cosine at 1e-4; restarting at 3e-4, the
first recipe's choice, measured no better: test CER 0.227 vs 0.218 with Stage 1 alone, 0.228 at
1e-4). At this scale Stage 2 is short: it exists to freeze SAM and mix text as the full recipe does."""
tag = "cpu"
init_from = "stage1"
freeze_sam = True
encoder_preset = "cpu"
seq_len = 128
data = "synth"
synth_kinds = "line"
synth_text_mix = 0.5
synth_max_words = 3
synth_fonts = "DejaVu Sans,DejaVu Serif,Liberation Sans,Liberation Serif,Liberation Mono,FreeSans"
synth_degrade = "val"
mode = "32x256"
text_ratio = 0.1
device_batch_size = 16
total_batch_size = 16
num_steps = 300
lr_encoder = 3e-5
lr_projector = 3e-5
lr_gpt = 3e-5
schedule = "step"
step_size = 200
step_gamma = 0.3
warmup_steps = 0
eval_every = 300
eval_batches = 2
cer_samples = 32
max_new_tokens = 40
save_every = 300
