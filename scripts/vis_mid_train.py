"""
Stage 2 (dev/design.md §5): continue from a Stage 1 checkpoint with SAM + neck + convs frozen, a step
LR schedule, and text-only rows mixed in. There is one trainer (scripts/vis_tok_train.py); Stage 2
is its `stage = 2` preset value (presets/mid.py), and this entry point only picks the preset:

    python -m scripts.vis_mid_train                    # presets/mid.py: the published Stage 2 defaults
    python -m scripts.vis_mid_train --preset=cpu       # presets/cpu_mid.py: the CPU recipe's Stage 2
    python -m scripts.vis_tok_train --preset=cpu_mid   # the same run

--preset=NAME reads presets/NAME_mid.py (base = ["NAME", "mid"] plus what Stage 2 changes); any
--key=value still overrides it.
"""

import os
import sys

from nanoocr.configurator import PRESET_DIR


def stage2_args(args):
    """This entry point's command line -> the trainer's: --preset=NAME -> NAME_mid, none -> mid, and
    --stage=2 first (so a preset given as a path is Stage 2 too; a later --stage still wins)."""
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
    return ["--stage=2"] + args


if __name__ == "__main__":
    sys.argv[1:] = stage2_args(sys.argv[1:])
    import scripts.vis_tok_train  # noqa: F401,E402  the trainer runs on import, as `python -m` would run it
