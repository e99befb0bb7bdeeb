"""Full size, Stage 2 (dev/design.md §5): SAM + neck + convs frozen, lr 3e-5 with StepLR x0.1 every 2000
steps, seq len 8192, 90% vision + 10% text."""
tag = "full"
init_from = "stage1"
freeze_sam = True
encoder_preset = "full"
seq_len = 8192
mode = "base"
data = "synth"
synth_kinds = "page:4,line_page:1,receipt:2"
text_ratio = 0.1
device_batch_size = 4
total_batch_size = 64
num_steps = 6000
lr_encoder = 3e-5
lr_projector = 3e-5
lr_gpt = 3e-5
schedule = "step"
step_size = 2000
step_gamma = 0.1
warmup_steps = 0
eval_every = 500
cer_samples = 16
max_new_tokens = 512
save_every = 1000
num_workers = 8
