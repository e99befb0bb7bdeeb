"""
The `nanoocr` console command: a thin dispatcher to the scripts, so `nanoocr read x.png` and
`python -m scripts.read x.png` are the same program. Each subcommand is one module in scripts/;
`mid-train` is the one trainer started with Stage 2 defaults in front of your arguments (yours win:
the last --preset counts, and a Stage 1 preset there stops with a message naming NAME_mid).
"""

import importlib.util
import runpy
import sys

SUBCOMMANDS = {
    # name: (module, one-line help)
    "tok-train": ("scripts.tok_train", "train the BPE tokenizer"),
    "render": ("scripts.render_samples", "write synthetic samples (images + JSONL)"),
    "prepare-data": ("scripts.prepare_data", "convert a dataset to the project's JSONL + images"),
    "train": ("scripts.vis_tok_train", "training: Stage 1 (everything trainable), or a NAME_mid preset"),
    "mid-train": ("scripts.vis_tok_train", "Stage 2 training (SAM frozen, text mixed in): --preset=NAME_mid"),
    "sample": ("scripts.vision_sample", "EXPECTED vs GENERATED on a dataset"),
    "read": ("scripts.read", "read text out of images"),
    "eval": ("scripts.vision_eval", "predictions + OCR metrics on a dataset"),
    "export": ("scripts.export", "export a checkpoint to safetensors + config + tokenizer"),
    "serve": ("scripts.serve", "web page + JSON / OpenAI-style API"),
    "bench": ("scripts.bench", "speed benchmarks on this machine"),
}
# arguments put before the user's: Stage 2 is the trainer with a Stage 2 preset (the user's --preset,
# the last one given, replaces mid; --stage=2 makes a Stage 1 preset an error, not a Stage 1 run)
DEFAULT_ARGS = {"mid-train": ["--preset=mid", "--stage=2"]}


def usage(available):
    lines = ["usage: nanoocr SUBCOMMAND [args...]   (SUBCOMMAND --help for its options)", ""]
    for name, (module, text) in SUBCOMMANDS.items():
        if name in available:
            lines.append(f"  {name:<13} {text}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    available = {n for n, (m, _) in SUBCOMMANDS.items() if importlib.util.find_spec(m) is not None}
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(available))
        return 0
    name = argv[0]
    if name not in available:
        print(f"nanoocr: unknown subcommand {name!r}\n\n{usage(available)}", file=sys.stderr)
        return 2
    sys.argv = [f"nanoocr {name}"] + DEFAULT_ARGS.get(name, []) + argv[1:]
    try:
        runpy.run_module(SUBCOMMANDS[name][0], run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, str):  # sys.exit("message"): show it, as the interpreter would
            print(e.code, file=sys.stderr)
            return 1
        return 0 if e.code is None else e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
