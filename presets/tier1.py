"""The original project's tier-1: overfit the 10 real images bundled in tasks/tier1 (receipts,
charts, scene text) with the CPU-sized model. The original: 10/10 after 300 steps x batch 10 on an A100."""
tag = "tier1"
data = "tier1"  # the bundled tasks/tier1/overfit_dataset.json (tasks/sources.py NAMED)
mode = "base"
seq_len = 1280  # the longest answer is 945 tokens + 273 placeholders
device_batch_size = 10
total_batch_size = 10
num_steps = 300
lr_encoder = 1e-3
lr_projector = 1e-3
lr_gpt = 1e-3
warmup_steps = 20
schedule = "constant"
encoder_freeze_steps = 100  # trained from step 0 the encoder collapses and outputs repeat (tests/test_tier1_synthetic.py)
encoder_rewarmup = 20
eval_every = 100
cer_samples = 0  # the final EXPECTED vs GENERATED check reads all 10
max_new_tokens = 512
save_every = 100
final_samples = 10
final_label = "tier-1"
