"""Turned pages read against the same pages upright: the renderer's single-column test pages
(synth.render(seed, i, "page", "test", size, size), 640x640 by default: small print, 40-90
lines a page) turned by 90 / 180 / 270 degrees clockwise and read
through reader.read_images as `nanoocr read` reads them. Prints, per page, the CER of each turn and
the orientation the cleaner settled on, then the mean CER per turn.

    python dev/turned_pages.py --model=DIR [--step=S] [--pages=40-51] [--turns=0,90,180,270] [--size=640]
"""
import argparse
import time

from PIL import Image

from nanoocr import reader, synth
from nanoocr.checkpoint_manager import load_model
from nanoocr.common import set_cpu_threads
from nanoocr.metrics import cer
from nanoocr.modes import resolve_mode

# a page turned k degrees clockwise (PIL's ROTATE_n turns counter-clockwise)
TURNS = {0: None, 90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--pages", default="40-51")
    ap.add_argument("--turns", default="0,90,180,270")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=640)
    args = ap.parse_args()
    set_cpu_threads()
    model, tok, meta = load_model(args.model, args.step)
    mode = resolve_mode(model.encoder.config, meta, None)
    lo, hi = (int(v) for v in args.pages.split("-"))
    turns = [int(t) for t in args.turns.split(",")]
    pages = [synth.render(args.seed, i, "page", "test", args.size, args.size)[::2] for i in range(lo, hi + 1)]
    texts = {k: [] for k in turns}
    for k in turns:
        t0 = time.time()
        images = [img if TURNS[k] is None else img.transpose(TURNS[k]) for img, _ in pages]
        recs = list(reader.read_images(model, tok, images, mode, max_words=reader.trained_max_words(meta)))
        for i, (r, (_, answer)) in enumerate(zip(recs, pages)):
            texts[k].append(r.get("text", ""))
            print(f"turn {k:3d} page {lo + i}: CER {cer([texts[k][-1]], [answer]):.3f}", flush=True)
        print(f"turn {k:3d}: mean CER {cer(texts[k], [a for _, a in pages]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    if 0 in texts:
        for k in turns:
            same = sum(a == b for a, b in zip(texts[k], texts[0]))
            print(f"turn {k:3d}: {same}/{len(pages)} texts identical to upright")


if __name__ == "__main__":
    main()
