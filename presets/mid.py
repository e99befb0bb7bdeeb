"""Stage 2 (vis_mid) per dev/design.md §5, the published defaults for any tag without its own
NAME_mid.py. Each value and why:
- init_from "stage1": start from this tag's Stage 1 result (Stage 2 never starts from random).
- freeze_sam: SAM + neck + convs frozen -- the front end keeps what Stage 1 taught it to see; CLIP,
  projector and GPT adapt.
- schedule step, step_size 2000, step_gamma 0.1, warmup 0: DeepSeek-OCR's StepLR x0.1 every 2000 steps.
- lr 3e-5 for every part: the paper's Stage 2 rate (Stage 1 used 5e-5).
- text_ratio 0.1: the paper's 10% text-only rows keep the GPT a language model.
- stage 2: checkpoints go to vis_mid_checkpoints/ and the meta says Stage 2.
Tag presets build on this one: presets/NAME_mid.py has base = ["NAME", "mid"] and only what differs."""
stage = 2
init_from = "stage1"
freeze_sam = True
schedule = "step"
step_size = 2000
step_gamma = 0.1
warmup_steps = 0
lr_encoder = 3e-5
lr_projector = 3e-5
lr_gpt = 3e-5
text_ratio = 0.1
