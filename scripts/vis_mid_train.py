"""
Stage 2 (dev/design.md §5): continue from a Stage 1 checkpoint with SAM + neck + convs frozen, a step
LR schedule, and text-only rows mixed in. The same loop as Stage 1 (scripts/vis_tok_train.py);
this file only picks Stage 2's preset:

    python -m scripts.vis_mid_train                    # presets/mid.py: the published Stage 2 defaults
    python -m scripts.vis_mid_train --preset=cpu       # presets/cpu_mid.py: the CPU recipe's Stage 2

A Stage 2 preset is complete on its own (init_from, freezing, schedule, mixing), so --preset=NAME
reads presets/NAME_mid.py; any --key=value still overrides it.
"""

import os
import sys
import runpy

from nanoocr.configurator import PRESET_DIR

args = sys.argv[1:]
named = [a for a in args if a.startswith("--preset=")]
if named:
    name = named[-1].split("=", 1)[1]
    if os.sep not in name and not name.endswith(".py"):
        mid = os.path.join(PRESET_DIR, f"{name}_mid.py")
        if not os.path.isfile(mid):
            sys.exit(f"vis_mid_train: no Stage 2 preset {mid}; write one (see presets/mid.py) or pass a path")
        args = [a for a in args if not a.startswith("--preset=")] + [f"--preset={name}_mid"]
else:
    args = ["--preset=mid"] + args
sys.argv = [sys.argv[0], "--stage=2"] + args
runpy.run_module("scripts.vis_tok_train", run_name="__main__")
