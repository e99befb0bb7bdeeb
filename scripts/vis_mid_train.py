"""
Stage 2 (DESIGN §5): continue from a Stage 1 checkpoint with SAM + neck + convs frozen, a step
LR schedule, and text-only rows mixed in. The same loop as Stage 1 — this file only changes the
defaults; any --key=value still overrides them.

    python -m scripts.vis_mid_train --preset=cpu            # starts from vis_tok_checkpoints/<tag>
    python -m scripts.vis_mid_train --init_from=DIR ...      # or from any nanoocr checkpoint
"""

import sys
import runpy

STAGE2_DEFAULTS = [
    "--stage=2",
    "--init_from=stage1",   # this tag's Stage 1 result
    "--freeze_sam=True",    # SAM, neck, net_2, net_3 frozen
    "--schedule=step",      # StepLR x0.1 every step_size steps
    "--lr_encoder=3e-5", "--lr_projector=3e-5", "--lr_gpt=3e-5",
    "--text_ratio=0.1",     # 90% vision + 10% text
    "--warmup_steps=0",
]
# the user's arguments come last so they win (a preset is applied before all --key=value)
sys.argv = [sys.argv[0]] + STAGE2_DEFAULTS + sys.argv[1:]
runpy.run_module("scripts.vis_tok_train", run_name="__main__")
