"""
Reading speed on this machine:
1. tokens/s of the cached engine (vision embeddings once + KV cache) against the naive loop (image
   re-encoded and the whole sequence re-run for every token), at `new_tokens` answer tokens;
2. per-image latency of the model against Tesseract on the same rendered line images.

    python -m scripts.bench_generate                        # a random CPU-preset model
    python -m scripts.bench_generate --model=DIR --mode=base

Speed does not depend on the weights, so by default this builds a random model of the CPU recipe's
shape (DeepEncoder "cpu" preset + 3-layer 192-wide GPT, 4096-id vocabulary). Its <|assistant_end|>
logit is pinned low so every run generates exactly the token count being measured; in part 2
each image gets as many tokens as its ground truth has, as a model that reads it correctly would.
"""

import os
import sys
import time
import shutil

import torch

from nanoocr.configurator import configure

# -----------------------------------------------------------------------------
model = ""              # a checkpoint / export directory ("" = a random CPU-recipe model)
mode = "32x256"         # resolution mode for part 1 (the CPU recipe's line strips; try base)
new_tokens = 256        # answer tokens per generation in part 1
naive = True            # also time the naive loop (slow: it re-encodes the image every token)
latency_images = 20     # rendered val line strips for part 2 (0 = skip)
tesseract = True        # part 2 against Tesseract (skipped when not installed)
gpt_depth = 3
vocab_size = 4096
threads = 0             # torch threads (0 = all cores)
# -----------------------------------------------------------------------------


def random_model():
    """A random CPU-recipe model with a vocab_size BPE (the model builders live in scripts/bench.py,
    which `nanoocr bench` shares)."""
    from nanoocr.tokenizer import Tokenizer
    from nanoocr.synth_text import corpus_iter
    from scripts.bench import random_vlm
    tok = Tokenizer.train_from_iterator(corpus_iter(max_chars=2_000_000), vocab_size)
    net = random_vlm(tok, "cpu", seq_len=512, gpt_overrides=dict(n_layer=gpt_depth))
    return net.eval(), tok


def timed(fn, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    from PIL import Image
    import numpy as np
    from nanoocr.common import set_cpu_threads
    from nanoocr.checkpoint_manager import load_model
    from nanoocr.engine import generate, naive_generate, parse_mode, preprocess, encode
    from scripts.bench import never_end

    n_threads = set_cpu_threads(threads or None)
    if model:
        net, tok, _ = load_model(model)
    else:
        net, tok = random_model()
    never_end(net, tok)
    m = parse_mode(mode)
    rng = np.random.default_rng(0)
    h, w = m if isinstance(m, tuple) else (256, 256)
    view = preprocess(net, Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), m)
    n_img = encode(net, [view])[0].size(0)
    params = sum(p.numel() for p in net.parameters())
    print(f"model: {'random CPU recipe' if not model else model}, {params / 1e6:.2f}M parameters, "
          f"mode {m} ({n_img} image placeholders), {n_threads} threads")

    generate(net, tok, [view], max_tokens=8)  # warm-up (allocator, kernels)
    t_cached, out = timed(lambda: generate(net, tok, [view], max_tokens=new_tokens), repeats=2)
    n = out[0]["num_tokens"]
    print(f"cached: {n} tokens in {t_cached:.2f}s = {n / t_cached:.1f} tokens/s")
    if naive:
        t_naive, out_n = timed(lambda: naive_generate(net, tok, [view], max_tokens=new_tokens))
        assert out_n[0]["ids"] == out[0]["ids"], "naive and cached generation disagree"
        print(f"naive:  {n} tokens in {t_naive:.2f}s = {n / t_naive:.1f} tokens/s  -> cached is {t_naive / t_cached:.1f}x faster")

    if latency_images <= 0:
        return 0
    from nanoocr.synth import render
    from nanoocr.metrics import cer
    lines = [render(0, i, "line", split="val") for i in range(latency_images)]  # (image, prompt, answer)
    line_mode = parse_mode("32x256")
    views = [preprocess(net, im, line_mode) for im, _, _ in lines]
    lengths = [len(tok.encode(a)) for _, _, a in lines]
    t0 = time.perf_counter()
    for v, k in zip(views, lengths):
        generate(net, tok, [v], max_tokens=k)
    per_image = (time.perf_counter() - t0) / len(views)
    t0 = time.perf_counter()
    for i in range(0, len(views), 8):  # batched: every row runs to the batch's longest answer
        generate(net, tok, views[i:i + 8], max_tokens=max(lengths[i:i + 8]))
    per_image_b8 = (time.perf_counter() - t0) / len(views)
    print(f"latency on {len(views)} val line strips (32x256, {sum(lengths) / len(lengths):.1f} answer tokens each): "
          f"model {per_image * 1000:.0f} ms/image (batch 1), {per_image_b8 * 1000:.0f} ms/image (batch 8)")
    if tesseract:
        if shutil.which("tesseract") is None:
            print("tesseract: not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
            return 0
        from scripts.vision_eval import run_tesseract
        results = [run_tesseract(im, psm=7) for im, _, _ in lines]
        t_tess = sum(s for _, s in results) / len(results)
        tess_cer = cer([t for t, _ in results], [a for _, _, a in lines])
        print(f"tesseract: {t_tess * 1000:.0f} ms/image (one process per image, --psm 7), CER {tess_cer:.4f}")
    return 0


if __name__ == "__main__":
    config = configure(globals())
    sys.exit(main())
