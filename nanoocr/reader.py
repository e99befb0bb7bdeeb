"""
Images in, texts out: the one path every reader of images takes (`nanoocr read`, `nanoocr eval`,
`nanoocr sample` and the server), so they all read an image alike. Evaluation reads dataset samples
through the same path (iter_records / run_model: one record per sample, its prediction beside its
reference).

    for rec in read_images(model, tokenizer, ["a.png", "scans/b.jpg", "doc.pdf", pil_image], mode):
        rec = {"image", "page", "text", "lines", "num_tokens", "views", "finish_reason", "seconds", "vision_tokens"}
           or {"image", "page", "error"}                       # the file named in image and in the message
        rec["lines"] = [{"text", "box": [left, top, right, bottom], "confidence", ("words": [...])}]

One input goes:
0. documents.open_pages: a PDF's pages rendered at dpi, a multi-page TIFF's frames, or the one image
   (a record per page, page numbers from 1; a bad page is its own error record);
1. load_image (image_process: any PIL mode, EXIF rotation, alpha on white, truncated files,
   decompression bombs, SVGs or HTML renamed to .png -> an RGB image or an ImageError naming the file);
2. strip_views: the model's inputs for it. One view, except that a model trained on fixed HxW strips
   reads an image of another size cut into lines and word groups of that size (strips.text_strips;
   each piece carries the most characters its ink can hold, and engine ends the piece there);
3. engine.generate (or joint_decode's readers: --decoder), all the views of a batch of images together,
   batch_size at a time; a page the layout could not tell upright from upside down is first settled
   by reading its longest lines both ways (settle_turn);
4. the pieces' texts joined back by line (strips.join_lines), and per line its box in the page's
   pixels (the strips' boxes, strips.text_strips) and a confidence (line_confidence).
The server runs 1-2 (load_views) on its decoding threads and 3-4 (generate_views) on its generation
threads, with a callback that streams the joined text so far.

The defaults every program shares live here: the no-repeat rule's n-gram size and window
(DeepSeek-OCR's), the most answer tokens (the model's training sequence length) and the autocast
dtype per device; the default prompt is modes.DEFAULT_PROMPT.
"""

import math
import os
import stat
import time
import traceback

from PIL import Image

from nanoocr.checkpoint_manager import (
    CheckpointError,
    NoModelError,
    find_model,
    load_model,
)
from nanoocr.common import autocast_dtype, autodetect_device_type, set_cpu_threads
from nanoocr.deepencoder import count_vision_tokens
from nanoocr.documents import DEFAULT_DPI, MAX_PAGES, open_pages
from nanoocr.engine import preprocess
from nanoocr.image_process import DEFAULT_MAX_PIXELS, ImageError, load_image
from nanoocr.joint_decode import check_decoder, default_decoder, read_strips
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.strips import join_lines, text_strips_turns
from nanoocr.vision_dataloader import sample_name

# DeepSeek-OCR's guard against repetition loops: no 30-token n-gram twice within 90 tokens
NO_REPEAT_NGRAM, NO_REPEAT_WINDOW = 30, 90
# A page whose up / down the layout cannot tell (layout.orientation: sure False) is settled by reading
# its SETTLE_LINES longest lines both ways: the way the model reads with the higher mean confidence wins
# (a line read upside down is gibberish to it). Only such pages pay, a few strips each way.
SETTLE_LINES = 3


# what open_model raises with a message meant for the user (programs print it and exit 2)
MODEL_ERRORS = (NoModelError, CheckpointError, OSError, ValueError)


def open_model(model_dir=None, device_type="", step=None):
    """The model a reading program uses: model_dir (a checkpoint or export directory; default the
    newest trained model, checkpoint_manager.find_model) at `step` (default the last) on
    device_type (default autodetect; on CPU with set_cpu_threads' thread count).
    -> (model_dir, model in eval mode, tokenizer, meta, device_type)."""
    device_type = device_type or autodetect_device_type()
    if device_type == "cpu":
        set_cpu_threads()
    model_dir = find_model(model_dir)
    model, tokenizer, meta = load_model(model_dir, step=step, device=device_type)
    return model_dir, model, tokenizer, meta, device_type


def default_max_tokens(model):
    """The most answer tokens per image unless told otherwise: the model's training sequence length
    (it never learned to write more in one answer)."""
    return model.gpt.config.sequence_len


def read_autocast_dtype(device_type):
    """bf16 autocast on CUDA (what the model trained in); exact fp32 elsewhere, CPUs with fast bf16
    included (which is where it differs from training's flops.autocast_dtype("auto", ...))."""
    return autocast_dtype("bfloat16" if device_type == "cuda" else "float32", device_type)


def trained_max_words(meta):
    """The renderer's words-per-line cap the model trained with (0 = none): strips cut for it hold
    no more words than it has seen in one line."""
    return int((meta.get("user_config") or {}).get("synth_max_words") or 0)


def strip_views(model, image, mode, max_words=0, whole=False):
    """The inputs one image becomes for this model: [(line index, processed)]. Square modes and an
    image already at a fixed mode's exact size (a strip as the renderer draws them) are one input;
    any other image read at a fixed (H, W) strip size is cut into lines and word groups first
    (strips.text_strips; generate_views joins the texts back), unless whole=True (stretched into
    one strip). A blank image gives []. A page the layout could not tell upright from upside down
    (strips.text_strips_turns) carries the other way up in its first view's "other_way_up":
    {"n": its views as cut, "views": the page turned by 180 degrees}, for settle_turn to choose
    between with the model (generate_views does)."""
    if whole or not isinstance(mode, tuple) or image.size == (mode[1], mode[0]):
        return [(0, preprocess(model, image, mode))]
    strips, other = text_strips_turns(image, *mode, max_words=max_words)
    def views(strips):
        return [(li, dict(preprocess(model, strip, mode), max_chars=strip.info["max_chars"], box=strip.info["box"],
                          line_box=strip.info["line_box"])) for li, strip in strips]
    out = views(strips)
    if other:
        out[0][1]["other_way_up"] = dict(n=len(out), views=views(other))
    return out


def _longest_lines(views, k):
    """The views of a page's k longest lines (by the characters their strips can hold: their ink's
    width), in reading order."""
    size = {}
    for li, p in views:
        size[li] = size.get(li, 0) + p["max_chars"]
    keep = set(sorted(size, key=lambda li: -size[li])[:k])
    return [(li, p) for li, p in views if li in keep]


def settle_turn(model, tokenizer, views, prompt, decoder="gpt", **kwargs):
    """strip_views() lists (one image's, or several pages' one after another, as the server joins a
    PDF's) -> the same with every page that carries "other_way_up" settled: its SETTLE_LINES
    longest lines read both ways (one batch; kwargs go to read_strips), and the way whose lines the
    model reads with the higher mean confidence (strips_confidence; a line it writes nothing for
    counts 0) kept, the other dropped. Upright wins a tie: the layout's guess stays unless the model
    disagrees."""
    out, j = [], 0
    while j < len(views):
        p = views[j][1]
        if "other_way_up" not in p:
            out.append(views[j])
            j += 1
            continue
        alt = p["other_way_up"]
        cur = [(views[j][0], {k: v for k, v in p.items() if k != "other_way_up"})] + list(views[j + 1:j + alt["n"]])
        j += alt["n"]
        ways = [cur, alt["views"]]
        tried = [_longest_lines(w, SETTLE_LINES) for w in ways]
        flat = [p for t in tried for _, p in t]
        got = read_strips(model, tokenizer, flat, [prompt] * len(flat), decoder=decoder, **kwargs)
        means, k = [], 0
        for t in tried:
            by_line = {}
            for li, _ in t:
                by_line.setdefault(li, []).append(got[k])
                k += 1
            means.append(sum(strips_confidence(o) or 0.0 for o in by_line.values()) / max(1, len(by_line)))
        out += ways[1] if means[1] > means[0] else cur
    return out


def line_confidence(logprobs):
    """A line's (or word group's) confidence in [0, 1] from its answer tokens' log-probabilities
    (engine.generate's "logprobs"): their mean, exponentiated -- the geometric mean of the
    probabilities the model gave the tokens it wrote. None when it wrote nothing. Used where the GPT
    decoded alone; the joint decoder's own confidence takes its place otherwise (strips_confidence)."""
    return round(math.exp(sum(logprobs) / len(logprobs)), 4) if logprobs else None


def strips_confidence(outs):
    """The confidence of a line (or word group) read as these strips: the joint / CTC decoders' own
    per-strip confidences (nanoocr/joint_decode.py), their geometric mean; else line_confidence of the
    GPT's token log-probabilities. None when nothing was written."""
    if not any(o["num_tokens"] for o in outs):
        return None
    if all("confidence" in o for o in outs):
        return round(math.exp(sum(math.log(max(o["confidence"], 1e-12)) for o in outs) / len(outs)), 4)
    return line_confidence([lp for o in outs for lp in o.get("logprobs", [])])


def view_lines(views, outs):
    """An image's strip_views() and their generate() results -> its lines, top to bottom:
    [{"text", "box", "confidence"}] (+ "words": the same per word group where the cutter split the
    line). Boxes are [left, top, right, bottom] in the image's pixels. An image read as one view (a
    square mode, an exact strip, --whole) is one "line" holding the whole text, boxed by the image."""
    if len(views) == 1 and "line_box" not in views[0][1]:
        p, o = views[0][1], outs[0]
        return [dict(text=o["text"].strip(), box=[0, 0, *p["size"]], confidence=strips_confidence([o]))]
    by_line = {}
    for (li, p), o in zip(views, outs):
        by_line.setdefault(li, []).append((p, o))
    lines = []
    for li in sorted(by_line):
        parts = by_line[li]
        texts = [o["text"].strip() for _, o in parts]
        line = dict(text=" ".join(t for t in texts if t), box=parts[0][0]["line_box"],
                    confidence=strips_confidence([o for _, o in parts]))
        if len(parts) > 1:
            line["words"] = [dict(text=t, box=p["box"], confidence=strips_confidence([o]))
                             for t, (p, o) in zip(texts, parts)]
        lines.append(line)
    return lines


def load_views(model, src, mode, max_words=0, whole=False, name=None, max_pixels=DEFAULT_MAX_PIXELS):
    """A path, bytes or PIL image -> strip_views() of it. An image that cannot be read raises
    ImageError naming `name` (default: the path, or "<bytes>" / "<PIL image>")."""
    return strip_views(model, load_image(src, max_pixels=max_pixels, name=name), mode, max_words, whole)


def generate_views(model, tokenizer, views_per_image, prompts, batch_size=8, callback=None, decoder="gpt", **kwargs):
    """generate() for images given as strip_views() lists: all their views in batches of batch_size,
    then one result per image: text (a lone view's own text; pieces joined by line with
    strips.join_lines), lines (view_lines: text, box and confidence per line), num_tokens,
    finish_reason ("length" if any piece was cut), views (how many were read) and seconds (its
    views' share of the generation time). prompts: one per image.
    callback(image index, token_id, text so far): the image's text so far is its pieces up to the
    one being written, joined by line; it only grows when the pieces are read one after another
    (batch_size=1, as the server reads). kwargs go to generate()."""
    t0 = time.time()
    views_per_image = [settle_turn(model, tokenizer, views, prompt, decoder=decoder, **kwargs)
                       for views, prompt in zip(views_per_image, prompts)]
    flat = [(i, j, p, prompt) for i, (views, prompt) in enumerate(zip(views_per_image, prompts))
            for j, (_, p) in enumerate(views)]
    texts = [[""] * len(views) for views in views_per_image]  # every piece's text so far, for streaming
    outs = []
    for k in range(0, len(flat), batch_size):  # a paragraph can be dozens of strips
        chunk = flat[k:k + batch_size]
        on_token = None
        if callback is not None:
            def on_token(row, token_id, text, chunk=chunk):
                i, j = chunk[row][:2]
                texts[i][j] = text
                views = views_per_image[i]
                if len(views) > 1:  # the finished pieces + this one, joined by line
                    text = join_lines(texts[i][:j + 1], [li for li, _ in views[:j + 1]])
                callback(i, token_id, text)
        got = read_strips(model, tokenizer, [c[2] for c in chunk], [c[3] for c in chunk], decoder=decoder,
                          callback=on_token, **kwargs)
        for (i, j, _, _), o in zip(chunk, got):
            texts[i][j] = o["text"]
        outs += got
    share = (time.time() - t0) / max(1, len(flat))
    results, k = [], 0
    for views in views_per_image:
        mine, k = outs[k:k + len(views)], k + len(views)
        text = mine[0]["text"] if len(views) == 1 else join_lines([o["text"] for o in mine], [li for li, _ in views])
        results.append(dict(text=text, lines=view_lines(views, mine) if views else [],
                            num_tokens=sum(o["num_tokens"] for o in mine), views=len(views),
                            finish_reason="length" if any(o["finish_reason"] == "length" for o in mine) else "stop",
                            seconds=share * len(views)))
    return results


def not_a_regular_file(src):
    """For a path that exists but is no regular file (a FIFO, a socket, a device): what it is; else
    None (a missing file is load_image's to report)."""
    if not isinstance(src, (str, os.PathLike)):
        return None
    try:
        st = os.stat(src)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")]
    return next((what for test, what in kinds if test(st.st_mode)), "not a plain file")


def _unexpected(e, when=""):
    """An exception nobody expected, as an error record's message: its type, text and the line that
    raised it (where to look, since the run goes on without a traceback)."""
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
    return f"unexpected {type(e).__name__}{' ' + when if when else ''}: {e}{at}"


def _default_name(src):
    """What load_image calls an input it is given no name for."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or "<PIL image>"
    return "<bytes>"


def iter_pages(images, names=None, errors=None, dpi=DEFAULT_DPI, max_pixels=DEFAULT_MAX_PIXELS, max_pages=MAX_PAGES,
               first_page=False):
    """Inputs -> (input index, name, page number, RGB image or an error message), page by page and
    lazily (a 500-page PDF is rendered as it is read, not all at once). An input that cannot be
    opened at all is one error with page None; a bad page of a good document is an error for that
    page, and its other pages still come. first_page: only each input's first page (an evaluation
    sample is one image with one transcript, whatever frames its file holds)."""
    for i, src in enumerate(images):
        name = names[i] if names is not None else _default_name(src)
        if errors is not None and errors[i] is not None:
            yield i, name, None, errors[i]
            continue
        special = not_a_regular_file(src)
        if special:  # opening a FIFO would wait forever for a writer; a device could be endless
            yield i, name, None, f"{name}: not a regular file ({special}); skipped"
            continue
        try:
            for page, image in open_pages(src, name, dpi, max_pixels, max_pages):
                yield i, name, page, str(image) if isinstance(image, ImageError) else image
                if first_page:
                    break
        except ImageError as e:  # its message names the file
            yield i, name, None, str(e)
        except OSError as e:  # permission denied, a directory that vanished, ...
            yield i, name, None, f"{type(e).__name__}: {e}"
        except Exception as e:  # a bug, or a file some library chokes on: this input fails, the run goes on
            yield i, name, None, _unexpected(e)


def read_images(model, tokenizer, images, mode, prompts=DEFAULT_PROMPT, names=None, errors=None, batch_size=8,
                max_words=0, whole=False, max_tokens=None, no_repeat_ngram=NO_REPEAT_NGRAM,
                no_repeat_window=NO_REPEAT_WINDOW, callback=None, dpi=DEFAULT_DPI, max_pixels=DEFAULT_MAX_PIXELS,
                max_pages=MAX_PAGES, first_page=False, keep_pictures=False, decoder=None, **kwargs):
    """Read inputs (paths, bytes or PIL images; a PDF or multi-page TIFF is one input of several
    pages): yields one record per page, in input and page order, batch_size pages at a time (so a
    long run shows results as it goes):
    {"image": name, "page": n, "size": [w, h], "text", "lines", "num_tokens", "views", "finish_reason", "seconds",
    "vision_tokens"}, or {"image": name, "page": n or None, "error": message} for a page or an input
    that cannot be read, that is no regular file (a FIFO would block the run), or on which anything
    else fails, a bug included (the others go on; page None: the whole input). lines: view_lines'.
    mode: a modes.parse_mode() value (modes.resolve_mode gives the model's own). prompts: one for
    all, or one per input. names: what records and errors call each input (default: its path).
    errors: per input, an error already known (a path that matched nothing) or None; such an input
    keeps its place in the output. max_words / whole: see strip_views. dpi: PDF pages are rendered
    at it; max_pixels: the largest image or page accepted; max_pages: pages read per document;
    first_page: one record per input, its first page (see iter_pages). keep_pictures: records also
    carry "picture", the page image read (a searchable PDF is made of them).
    seconds = the page's loading time + its share of its batch's generation time. vision_tokens: all
    its views' (deepencoder.count_vision_tokens). callback(input index, token_id, text so far), see
    generate_views. decoder: "joint" | "gpt" | "ctc" (nanoocr/joint_decode.py; None = the model's
    default: joint with a CTC head on fixed strips, else gpt). kwargs (temperature, autocast_dtype, ...)
    go to engine.generate."""
    if decoder is None:
        decoder = default_decoder(model, mode)
    check_decoder(model, mode, decoder)
    n = len(images)
    prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
    assert len(prompts) == n, f"{len(prompts)} prompts for {n} images (give one prompt, or one per image)"
    max_tokens = default_max_tokens(model) if max_tokens is None else max_tokens
    pages = iter_pages(images, names, errors, dpi, max_pixels, max_pages, first_page)
    while True:
        records, ready = [], []  # ready: (record slot, input index, name, page, views, load seconds, image)
        t0 = time.time()
        for i, name, page, image in pages:
            if isinstance(image, str):
                records.append({"image": name, "page": page, "error": image})
            else:
                try:
                    views = strip_views(model, image, mode, max_words, whole)
                    ready.append((len(records), i, name, page, views, time.time() - t0, image))
                    records.append(None)
                except ImageError as e:
                    records.append({"image": name, "page": page, "error": str(e)})
                except Exception as e:  # a bug, or an image some library chokes on: this page fails, the run goes on
                    records.append({"image": name, "page": page, "error": _unexpected(e)})
            t0 = time.time()
            if len(records) >= batch_size:
                break
        if not records:
            return
        on_token = None if callback is None else (lambda r, tok, text: callback(ready[r][1], tok, text))
        gen_kwargs = dict(max_tokens=max_tokens, no_repeat_ngram_size=no_repeat_ngram,
                          no_repeat_window=no_repeat_window, decoder=decoder, **kwargs)
        try:
            outs = generate_views(model, tokenizer, [r[4] for r in ready], [prompts[r[1]] for r in ready],
                                  batch_size, callback=on_token, **gen_kwargs)
        except Exception as e:
            # some page of the batch broke generation: read them one at a time, so only that one fails
            # (a lone page is not generated twice: the error is its own)
            outs = [{"error": f"{ready[0][2]}: {_unexpected(e, 'while generating')}"}] if len(ready) == 1 else []
            for slot, i, name, page, views, _, _ in (ready if len(ready) > 1 else []):
                one_cb = None if callback is None else (lambda _r, tok, text, i=i: callback(i, tok, text))
                try:
                    outs += generate_views(model, tokenizer, [views], [prompts[i]], batch_size, callback=one_cb,
                                           **gen_kwargs)
                except Exception as e1:
                    outs.append({"error": f"{name}: {_unexpected(e1, 'while generating')}"})
        for (slot, i, name, page, views, load_s, image), out in zip(ready, outs):
            if "error" in out:
                records[slot] = {"image": name, "page": page, "error": out["error"]}
                continue
            records[slot] = {
                "image": name, "page": page, "size": list(image.size), "text": out["text"], "lines": out["lines"],
                "num_tokens": out["num_tokens"], "views": out["views"], "finish_reason": out["finish_reason"],
                "seconds": load_s + out["seconds"],
                "vision_tokens": max(1, sum(count_vision_tokens(model.encoder.config, p) for _, p in views))}
            if keep_pictures:
                records[slot]["picture"] = image
        yield from records


# -----------------------------------------------------------------------------
# Dataset samples in, evaluation records out (`nanoocr eval`, `nanoocr sample`)

def iter_records(model, tokenizer, samples, mode, prompts, max_tokens=None, batch_size=8, no_repeat_ngram=0,
                 no_repeat_window=0, autocast_dtype=None, max_words=0, whole=False, decoder=None, **decode_kwargs):
    """Predict every sample {image, answer, id, (family)} with read_images (as `nanoocr read` reads
    files), yielding one record per sample, in order, a batch at a time (eval writes each as it comes):
    {id, image, prompt, pred, ref, tokens, answer_tokens, vision_tokens, seconds, finish_reason},
    or {id, image, error} for an unreadable image. prompts: one per sample (tasks.sources.sample_prompt
    gives a dataset sample's own). seconds = the image's loading time + its share of its batch's
    generation time. A strip model reads images of another size cut into lines and word groups (at
    most max_words words each), the texts joined back; vision_tokens then counts all strips.
    whole=True stretches every image to the strip instead. max_tokens None: the model's training
    sequence length."""
    assert len(prompts) == len(samples), f"iter_records: {len(prompts)} prompts for {len(samples)} samples"
    outs = read_images(model, tokenizer, [s["image"] for s in samples], mode, prompts,
                       names=[sample_name(s) for s in samples], batch_size=batch_size, max_words=max_words,
                       whole=whole, max_tokens=max_tokens, no_repeat_ngram=no_repeat_ngram,
                       no_repeat_window=no_repeat_window, autocast_dtype=autocast_dtype, decoder=decoder,
                       first_page=True, **decode_kwargs)  # one transcript per sample: a multi-frame file's first frame
    for s, p, o in zip(samples, prompts, outs):
        if "error" in o:
            yield {"id": s.get("id"), "image": o["image"], "error": o["error"]}
            continue
        rec = {"id": s.get("id"), "image": o["image"], "prompt": p, "pred": o["text"], "ref": s["answer"],
               "tokens": o["num_tokens"], "answer_tokens": len(tokenizer.encode(s["answer"])),
               "vision_tokens": o["vision_tokens"], "seconds": o["seconds"], "finish_reason": o["finish_reason"]}
        if o["views"] != 1:
            rec["strips"] = o["views"]
        if "family" in s:  # font family, for per-family CER (tasks/realistic.py, tasks/prose.py)
            rec["family"] = s["family"]
        yield rec


def run_model(*args, **kwargs):
    """iter_records' records as a list."""
    return list(iter_records(*args, **kwargs))
