"""
`nanoocr bench`'s reading sections (parts 4 and 7 of the suite), on a random CPU-recipe model or,
with `--model=DIR`, a trained checkpoint / export:
- generate: tokens/s of the cached engine (vision embeddings once + KV cache) against the naive
  loop that re-encodes the image and re-runs the whole sequence for every token;
- latency: per-image time to read rendered val line strips (32x256) at batch 1 and 8, against
  Tesseract on the same images (skipped, with a message, where tesseract is not installed).

Speed does not depend on the weights; every model's <|assistant_end|> logit is pinned low so a run
generates exactly the tokens being measured: `new_tokens` in generate, and in latency as many as
the image's ground truth has, as a model that reads it correctly would.
"""

import shutil
import statistics
import time

from scripts.bench_common import STRIP, fmt, never_end, random_vlm, summary


def generation_model(tok, model_dir=""):
    """(model in eval mode, its tokenizer): model_dir's, or a random CPU-recipe model with tok."""
    if model_dir:
        from nanoocr.checkpoint_manager import load_model
        net, tok, _ = load_model(model_dir)
    else:
        net = random_vlm(tok, "cpu", seq_len=512)
    net.eval()
    never_end(net, tok)
    return net, tok


def bench_generate(tok, mode, new_tokens, cached_runs, naive_runs, model_dir=""):
    """Batch 1, greedy, one random image in `mode` (STRIP or a named mode such as "base")."""
    import numpy as np
    from PIL import Image

    from nanoocr.engine import encode, generate, naive_generate, preprocess
    net, tok = generation_model(tok, model_dir)
    rng = np.random.default_rng(0)
    size = mode if isinstance(mode, tuple) else (256, 256)
    view = preprocess(net, Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)), mode)
    n_img = encode(net, [view])[0].size(0)
    generate(net, tok, [view], max_tokens=8)  # warm-up
    cached, naive, ids = [], [], None
    for i in range(max(cached_runs, naive_runs)):  # alternate, as everywhere
        if i < cached_runs:
            t0 = time.perf_counter()
            out = generate(net, tok, [view], max_tokens=new_tokens)
            cached.append(time.perf_counter() - t0)
            assert out[0]["num_tokens"] == new_tokens, "the benchmark model stopped early"
            ids = out[0]["ids"]
        if i < naive_runs:
            t0 = time.perf_counter()
            out_n = naive_generate(net, tok, [view], max_tokens=new_tokens)
            naive.append(time.perf_counter() - t0)
            assert out_n[0]["ids"] == ids, "naive and cached generation disagree"
    c, n = statistics.median(cached), statistics.median(naive)
    return dict(speedup=n / c, new_tokens=new_tokens, image_placeholders=n_img, vocab=tok.get_vocab_size(),
                cached_tokens_per_s=summary([new_tokens / t for t in cached]),
                naive_tokens_per_s=summary([new_tokens / t for t in naive]),
                speedup_range=[min(naive) / max(cached), max(naive) / min(cached)])


def bench_latency(tok, n_images, model_dir="", batch=8):
    """Mean ms per image to read n_images rendered val line strips (the ground truth's token count
    each), one at a time and `batch` at a time, and Tesseract's on the same images."""
    from nanoocr.engine import generate, preprocess
    from nanoocr.metrics import cer
    from nanoocr.synth import render
    net, tok = generation_model(tok, model_dir)
    lines = [render(0, i, "line", split="val") for i in range(n_images)]  # (image, prompt, answer)
    views = [preprocess(net, im, STRIP) for im, _, _ in lines]
    lengths = [len(tok.encode(a)) for _, _, a in lines]
    generate(net, tok, views[:1], max_tokens=4)  # warm-up
    t0 = time.perf_counter()
    for v, k in zip(views, lengths):
        generate(net, tok, [v], max_tokens=k)
    per_image = (time.perf_counter() - t0) / n_images
    t0 = time.perf_counter()
    for i in range(0, n_images, batch):  # batched: every row runs to the batch's longest answer
        generate(net, tok, views[i:i + batch], max_tokens=max(lengths[i:i + batch]))
    per_image_batched = (time.perf_counter() - t0) / n_images
    out = dict(images=n_images, mode="32x256", answer_tokens_mean=round(sum(lengths) / n_images, 1), batch=batch,
               model_ms_per_image=round(per_image * 1000, 1), model_ms_per_image_batched=round(per_image_batched * 1000, 1))
    if net.ctc_head is not None and model_dir:  # a trained model with a CTC head: what joint decoding costs
        from nanoocr.checkpoint_manager import load_model
        from nanoocr.joint_decode import joint_generate
        plain = load_model(model_dir)[0].eval()  # as trained: never_end above would make the GPT run on
        max_tokens = max(lengths) + 8  # it decides where to stop itself, as `nanoocr read` does
        t0 = time.perf_counter()
        joint = []
        for i in range(0, n_images, batch):
            joint += joint_generate(plain, tok, views[i:i + batch], "Free OCR.", max_tokens=max_tokens)
        out["joint_ms_per_image_batched"] = round(1000 * (time.perf_counter() - t0) / n_images, 1)
        greedy = []
        for i in range(0, n_images, batch):
            greedy += generate(plain, tok, views[i:i + batch], max_tokens=max_tokens)
        refs = [a for _, _, a in lines]
        out["cer_gpt"] = round(cer([o["text"] for o in greedy], refs), 4)
        out["cer_joint"] = round(cer([o["text"] for o in joint], refs), 4)
    if shutil.which("tesseract") is None:
        out["tesseract_skipped"] = "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)"
        return out
    from nanoocr.tesseract import run_tesseract
    results = [run_tesseract(im, psm=7) for im, _, _ in lines]  # --psm 7: one text line
    out["tesseract"] = dict(ms_per_image=round(1000 * sum(s for _, s in results) / n_images, 1), psm=7,
                            cer=round(cer([t for t, _ in results], [a for _, _, a in lines]), 4))
    return out


def report_rows(r):
    """(label, value) rows of print_report for this module's sections."""
    rows = []
    for label, g in r.get("generation_cache_speedup", {}).items():
        rows.append((f"cached / naive generation, {label}, {g['new_tokens']} tokens",
                     f"{g['speedup']:.1f}x ({fmt(g['cached_tokens_per_s'])} vs {fmt(g['naive_tokens_per_s'])} tok/s)"))
    lat = r.get("latency")
    if lat:
        tess = lat["tesseract"] if "tesseract" in lat else None
        rows.append((f"ms per image, {lat['images']} val strips {lat['mode']}",
                     f"model {lat['model_ms_per_image']:.0f} (batch 1), {lat['model_ms_per_image_batched']:.0f} "
                     f"(batch {lat['batch']}); " + (f"Tesseract {tess['ms_per_image']:.0f} (CER {tess['cer']:.3f})"
                                                    if tess else lat["tesseract_skipped"])))
    if lat and "joint_ms_per_image_batched" in lat:
        rows.append((f"joint decoding, {lat['images']} val strips", f"{lat['joint_ms_per_image_batched']:.0f} ms/image "
                     f"(batch {lat['batch']}); CER {lat['cer_joint']:.3f} vs GPT greedy {lat['cer_gpt']:.3f}"))
    return rows
