"""Choose joint decoding's CTC weight and beam on VALIDATION images: tasks/realistic.py's generators
with seeds other than the test rows' 0 (same kinds of image, other images), read through
reader.read_images as `nanoocr read` reads them. Prints CER per row and setting.

    python dev/tune_joint.py --model=DIR [--step=S] [--seed=1] [--rows=clean_lines,degraded_lines]
        [--settings=gpt,0.3x4,0.5x4]

A setting is "gpt", "ctc", or WEIGHTxBEAM for the joint decoder."""
import argparse

from nanoocr import reader
from nanoocr.checkpoint_manager import load_model
from nanoocr.common import set_cpu_threads
from nanoocr.metrics import cer
from nanoocr.modes import resolve_mode
from tasks.realistic import realistic_samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", default="clean_lines,degraded_lines,paragraphs,grey_scans,colour_scans,pencil_lines")
    ap.add_argument("--settings", default="gpt,0.2x4,0.3x4,0.5x4")
    args = ap.parse_args()
    set_cpu_threads()
    model, tok, meta = load_model(args.model, args.step)
    mode = resolve_mode(model.encoder.config, meta, None)
    print(f"{args.model} step {meta.get('step')}, validation seed {args.seed}")
    print("row".ljust(16) + "".join(s.rjust(10) for s in args.settings.split(",")))
    for row in args.rows.split(","):
        samples = realistic_samples(row, seed=args.seed)
        cells = []
        for setting in args.settings.split(","):
            kw = {}
            if setting in ("gpt", "ctc"):
                kw["decoder"] = setting
            else:
                w, b = setting.split("x")
                kw.update(decoder="joint", weight=float(w), beam=int(b))
            recs = list(reader.read_images(model, tok, [s["image"] for s in samples], mode, max_words=reader.trained_max_words(meta), **kw))
            cells.append(cer([r.get("text", "") for r in recs], [s["answer"] for s in samples]))
        print(row.ljust(16) + "".join(f"{c:10.4f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
