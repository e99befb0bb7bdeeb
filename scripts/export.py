"""
Export a trained checkpoint as a self-contained directory: model.safetensors + config.json +
tokenizer/ (format in nanoocr/checkpoint_manager.py). `nanoocr read --model OUT_DIR`, `nanoocr eval`
and training's --init_from all load it like a checkpoint directory.

    nanoocr export ~/.cache/nanoocr/vis_tok_checkpoints/cpu exported/cpu
    nanoocr export CHECKPOINT OUT_DIR --step 2000 --dtype bfloat16
"""

import argparse
import os
import sys

import torch

from nanoocr.checkpoint_manager import (
    CheckpointError,
    is_export_dir,
    load_model,
    save_export,
)

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nanoocr export", description="Export a checkpoint to safetensors + config + tokenizer.")
    parser.add_argument("checkpoint", help="a checkpoint directory (model_*.pt + meta_*.json) or an export directory")
    parser.add_argument("out_dir", help="where to write model.safetensors, config.json and tokenizer/")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last complete one)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="dtype of the stored weights (bfloat16 halves the file; loading casts back to fp32)")
    args = parser.parse_args(argv)
    if os.path.abspath(args.checkpoint) == os.path.abspath(args.out_dir):
        parser.error("OUT_DIR must differ from CHECKPOINT")
    # never scribble over an unrelated directory: OUT_DIR must be new, empty, or a previous export
    if os.path.isdir(args.out_dir) and os.listdir(args.out_dir) and not is_export_dir(args.out_dir, interrupted_too=True):
        print(f"nanoocr export: {args.out_dir} exists and is not an export directory; choose a new OUT_DIR", file=sys.stderr)
        return 2
    try:
        model, tokenizer, meta = load_model(args.checkpoint, step=args.step)
    except (CheckpointError, OSError, ValueError, AssertionError) as e:
        print(f"nanoocr export: {e}", file=sys.stderr)
        return 2
    save_export(args.out_dir, model, tokenizer, meta, dtype=DTYPES[args.dtype])
    n_params = sum(p.numel() for p in model.parameters())
    size = os.path.getsize(os.path.join(args.out_dir, "model.safetensors"))
    print(f"exported {args.checkpoint} (step {meta.get('step')}, {n_params:,} parameters, {args.dtype}) "
          f"-> {args.out_dir} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
