"""The speedrun on one or more CUDA GPUs (Stage 1): the CPU recipe's architecture and data, wider
and longer — a 6-layer 384-wide GPT, 4x the batch, 5x the steps, bf16 autocast, data workers.
The CPU recipe's auxiliary CTC loss on the vision tokens replaces the encoder freeze (dev/LOG.md c1-c3:
it read ~2x sooner per step on CPU). Not yet run on a GPU."""
tag = "gpu"
encoder_preset = "cpu"
gpt_depth = 6
gpt_n_embd = 384
gpt_n_head = 6
seq_len = 128
proj_std = 0.02
data = "synth"
synth_kinds = "line"
synth_text_mix = 0.5
synth_max_words = 3
mode = "32x256"
device_batch_size = 64
total_batch_size = 64
num_steps = 12000
lr_encoder = 1e-3
lr_projector = 1e-3
lr_gpt = 1e-3
warmup_steps = 200
encoder_freeze_steps = 0
ctc_weight = 1.0
ctc_features = "tokens"
eval_every = 1000
cer_samples = 64
max_new_tokens = 40
save_every = 1000
num_workers = 6
