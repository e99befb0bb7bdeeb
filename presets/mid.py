"""Stage 2 (vis_mid) per dev/design.md §5: start from this tag's Stage 1 result, SAM + neck + convs frozen,
AdamW 3e-5 with StepLR x0.1 every 2000 steps, 90% vision + 10% text."""
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
