"""
Write N synthetic samples to a folder as images + samples.jsonl, for inspection and for other tools.

    python -m scripts.render_samples --n=64 --out=DIR [--kind=line|line_page|block|page|receipt|all]
        [--split=train|val|test] [--seed=0] [--start=0] [--height=H] [--width=W] [--degrade=none]
        [--grid=PATH.png]

Each JSONL row is {"id", "image", "prompt", "answer"} with the image path relative to the JSONL and
"<image>\\n" in front of the prompt: the same fields as tasks/tier1/overfit_dataset.json, so the
same readers take both. --kind=all (the default) cycles through every kind. --grid also writes a
contact sheet of the samples (dev/samples_grid.png in the README is made this way).
"""

import argparse
import json
import os
import time

from PIL import Image

from nanoocr import synth


def contact_sheet(images, cols=4, cell=256, pad=6):
    """Samples side by side, each fitted into a cell (keeping its aspect), on a white sheet."""
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    for i, im in enumerate(images):
        s = cell / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        x = pad + (i % cols) * (cell + pad) + (cell - im.width) // 2
        y = pad + (i // cols) * (cell + pad) + (cell - im.height) // 2
        sheet.paste(im, (x, y))
    return sheet


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--kind", default="all", choices=("all",) + synth.KINDS)
    ap.add_argument("--split", default="train", choices=synth.SPLITS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first sample index")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--degrade", default=None, help="'none' or a split name (default: the split's preset)")
    ap.add_argument("--grid", default=None, help="also write a contact sheet of the samples to this PNG")
    args = ap.parse_args(argv)

    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    kinds = synth.KINDS if args.kind == "all" else (args.kind,)
    opts = {} if args.degrade is None else {"degrade": args.degrade}
    images, t0 = [], time.time()
    with open(os.path.join(args.out, "samples.jsonl"), "w", encoding="utf-8") as f:
        for k in range(args.n):
            kind, index = kinds[k % len(kinds)], args.start + k
            img, prompt, answer = synth.render(args.seed, index, kind, args.split, args.height, args.width, **opts)
            sid = f"{args.split}_{kind}_{args.seed}_{index:06d}"
            rel = f"images/{sid}.png"
            img.save(os.path.join(args.out, rel))
            f.write(json.dumps({"id": sid, "image": rel, "prompt": "<image>\n" + prompt, "answer": answer,
                                "kind": kind, "split": args.split}, ensure_ascii=False) + "\n")
            if args.grid:
                images.append(img)
    dt = time.time() - t0
    print(f"wrote {args.n} samples to {args.out}/samples.jsonl in {dt:.1f}s ({args.n / max(dt, 1e-9):.1f}/s)")
    if args.grid:
        # a 128-colour palette keeps the noisy sheet ~3x smaller, with no visible loss
        contact_sheet(images).quantize(128).save(args.grid, optimize=True)
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
