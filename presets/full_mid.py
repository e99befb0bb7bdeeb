"""Full size, Stage 2 (dev/design.md §5), DeepSeek-OCR's published Stage 2. Each value and why:
- init_from stage1, freeze_sam: continue from this tag's Stage 1; SAM + neck + net_2/net_3 frozen, so
  the high-resolution front end keeps what it learnt and CLIP, projector and GPT adapt.
- lr 3e-5 with StepLR x0.1 every 2000 steps, no warmup: the paper's Stage 2 (Stage 1 was 5e-5).
- seq_len 8192: the paper's Stage 2 length (Stage 1 4096), room for dense pages.
- text_ratio 0.1: the paper's 10% text-only rows keep the GPT a language model.
- data, kinds, mode, batch: Stage 1's, so Stage 2 refines the same task; 6000 steps = three StepLR
  periods (1x, 0.1x, 0.01x).
- tokenizer_vocab 0: the checkpoint carries its tokenizer; the check only guards a fresh build.
- base full / base mid: Stage 1's task and batch, the published Stage 2's freezing, lr and schedule.
- gpt_depth, gpt_n_embd, gpt_n_head, require_weights: back to the trainer's defaults (the model and
  its weights come from the Stage 1 checkpoint), which Stage 1's full preset sets."""
base = ["full", "mid"]
gpt_depth = 3
gpt_n_embd = 0
gpt_n_head = 4
tokenizer_vocab = 0
require_weights = False
seq_len = 8192
num_steps = 6000
