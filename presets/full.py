"""Full size, Stage 1: DeepSeek-OCR's DeepEncoder (SAM ViT-B 1024 px + net_2/net_3 + CLIP-L/14) and a
d20-class nanochat GPT (20 layers, 1280 wide, 10 heads = the projector's 1280 outputs), Base mode
(273 placeholders), dev/design.md §5's Stage 1 (lr 5e-5, warmup then cosine, seq len 4096). Meant for
GPUs under torchrun (runs/full.sh), optionally from real weights: --encoder_weights=SAM,CLIP files
and --nanochat_dir / --nanochat_tokenizer."""
tag = "full"
# From random weights this recipe's 20k steps would not make a SAM-B + CLIP-L + d20 model read: the script
# stops without --encoder_weights and --nanochat_dir, naming the files, unless --from_scratch=True.
require_weights = True
# nanochat's d20 vocabulary: a tokenizer of any other size in the base dir (the speedrun's 512 ids) is
# refused rather than silently reused (runs/full.sh checks before training, the script again at start).
tokenizer_vocab = 65536
encoder_preset = "full"
gpt_depth = 20
gpt_n_embd = 1280
gpt_n_head = 10
seq_len = 4096
mode = "base"
data = "synth"
synth_kinds = "page:4,line_page:1,receipt:2"
device_batch_size = 4
total_batch_size = 64
num_steps = 20000
lr_encoder = 5e-5
lr_projector = 5e-5
lr_gpt = 5e-5
warmup_steps = 500
schedule = "cosine"
final_lr_frac = 0.1
eval_every = 500
cer_samples = 16
max_new_tokens = 512
save_every = 1000
num_workers = 8
