"""Full size, Stage 2 (dev/design.md §5), DeepSeek-OCR's published Stage 2. Each value and why:
- init_from stage1, freeze_sam: continue from this tag's Stage 1; SAM + neck + net_2/net_3 frozen, so
  the high-resolution front end keeps what it learnt and CLIP, projector and GPT adapt.
- lr 3e-5 with StepLR x0.1 every 2000 steps, no warmup: the paper's Stage 2 (Stage 1 was 5e-5).
- seq_len 8192: the paper's Stage 2 length (Stage 1 4096), room for dense pages.
- text_ratio 0.1: the paper's 10% text-only rows keep the GPT a language model.
- data, kinds, mode, batch: Stage 1's, so Stage 2 refines the same task; 6000 steps = three StepLR
  periods (1x, 0.1x, 0.01x).
- tokenizer_vocab: the checkpoint carries its tokenizer; the check only guards a fresh build."""
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
