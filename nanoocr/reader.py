"""
Images in, texts out: the one path every reader of images takes (`nanoocr read`, `nanoocr eval`,
`nanoocr sample` and the server), so they all read an image alike.

    for rec in read_images(model, tokenizer, ["a.png", "scans/b.jpg", pil_image], mode):
        rec = {"image", "text", "num_tokens", "views", "finish_reason", "seconds", "vision_tokens"}
           or {"image", "error"}                               # the file named in image and in the message

One image goes:
1. load_image (image_process: any PIL mode, EXIF rotation, alpha on white, truncated files,
   decompression bombs, PDFs renamed to .png -> an RGB image or an ImageError naming the file);
2. strip_views: the model's inputs for it. One view, except that a model trained on fixed HxW strips
   reads an image of another size cut into lines and word groups of that size (strips.text_strips;
   each piece carries the most characters its ink can hold, and engine ends the piece there);
3. engine.generate (or joint_decode's readers: --decoder), all the views of a batch of images together, batch_size at a time;
4. the pieces' texts joined back by line (strips.join_lines).
The server runs 1-2 (load_views) on its decoding threads and 3-4 (generate_views) on its generation
threads, with a callback that streams the joined text so far.

The defaults every program shares live here: the no-repeat rule's n-gram size and window
(DeepSeek-OCR's), the most answer tokens (the model's training sequence length) and the autocast
dtype per device; the default prompt is modes.DEFAULT_PROMPT.
"""

import os
import stat
import time
import traceback

from PIL import Image

from nanoocr.common import autodetect_device_type, set_cpu_threads
from nanoocr.common import autocast_dtype
from nanoocr.checkpoint_manager import load_model, find_model, CheckpointError, NoModelError
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.image_process import DEFAULT_MAX_PIXELS, ImageError, load_image
from nanoocr.deepencoder import count_vision_tokens
from nanoocr.strips import text_strips, join_lines
from nanoocr.engine import preprocess
from nanoocr.joint_decode import check_decoder, default_decoder, read_strips

# DeepSeek-OCR's guard against repetition loops: no 30-token n-gram twice within 90 tokens
NO_REPEAT_NGRAM, NO_REPEAT_WINDOW = 30, 90


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
    one strip). A blank image gives []."""
    if whole or not isinstance(mode, tuple) or image.size == (mode[1], mode[0]):
        return [(0, preprocess(model, image, mode))]
    return [(li, dict(preprocess(model, strip, mode), max_chars=strip.info["max_chars"]))
            for li, strip in text_strips(image, *mode, max_words=max_words)]


def load_views(model, src, mode, max_words=0, whole=False, name=None, max_pixels=DEFAULT_MAX_PIXELS):
    """A path, bytes or PIL image -> strip_views() of it. An image that cannot be read raises
    ImageError naming `name` (default: the path, or "<bytes>" / "<PIL image>")."""
    return strip_views(model, load_image(src, max_pixels=max_pixels, name=name), mode, max_words, whole)


def generate_views(model, tokenizer, views_per_image, prompts, batch_size=8, callback=None, decoder="gpt", **kwargs):
    """generate() for images given as strip_views() lists: all their views in batches of batch_size,
    then one result per image: text (a lone view's own text; pieces joined by line with
    strips.join_lines), num_tokens, finish_reason ("length" if any piece was cut), views (how many
    were read) and seconds (its views' share of the generation time). prompts: one per image.
    callback(image index, token_id, text so far): the image's text so far is its pieces up to the
    one being written, joined by line; it only grows when the pieces are read one after another
    (batch_size=1, as the server reads). kwargs go to generate()."""
    flat = [(i, j, p, prompt) for i, (views, prompt) in enumerate(zip(views_per_image, prompts))
            for j, (_, p) in enumerate(views)]
    texts = [[""] * len(views) for views in views_per_image]  # every piece's text so far, for streaming
    outs, t0 = [], time.time()
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
        results.append(dict(text=text, num_tokens=sum(o["num_tokens"] for o in mine), views=len(views),
                            finish_reason="length" if any(o["finish_reason"] == "length" for o in mine) else "stop",
                            seconds=share * len(views)))
        if mine and all("confidence" in o for o in mine):  # the joint / CTC decoders score every strip
            results[-1]["confidence"] = min(o["confidence"] for o in mine)
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


def read_images(model, tokenizer, images, mode, prompts=DEFAULT_PROMPT, names=None, errors=None, batch_size=8,
                max_words=0, whole=False, max_tokens=None, no_repeat_ngram=NO_REPEAT_NGRAM,
                no_repeat_window=NO_REPEAT_WINDOW, callback=None, decoder=None, **kwargs):
    """Read images (paths, bytes or PIL images): yields one record per input, in input order, a
    batch of batch_size images at a time (so a long run shows results as it goes):
    {"image": name, "text", "num_tokens", "views", "finish_reason", "seconds", "vision_tokens"}, or
    {"image": name, "error": message} for an image that cannot be read, that is no regular file (a
    FIFO would block the run), or on which anything else fails, a bug included (the others go on).
    mode: a modes.parse_mode() value (modes.resolve_mode gives the model's own). prompts: one for
    all, or one per image. names: what records and errors call each image (default: its path).
    errors: per input, an error already known (a path that matched nothing) or None; such an input
    keeps its place in its batch and in the output. max_words / whole: see strip_views. seconds =
    the image's loading time + its share of its batch's generation time. vision_tokens: all its
    views' (deepencoder.count_vision_tokens). callback(input index, token_id, text so far), see
    generate_views. decoder: "joint" | "gpt" | "ctc" (nanoocr/joint_decode.py; None = the model's default:
    joint with a CTC head on fixed strips, else gpt); the joint and ctc decoders add "confidence" (the
    weakest strip's). kwargs (temperature, autocast_dtype, ...) go to engine.generate."""
    if decoder is None:
        decoder = default_decoder(model, mode)
    check_decoder(model, mode, decoder)
    n = len(images)
    prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
    assert len(prompts) == n, f"{len(prompts)} prompts for {n} images (give one prompt, or one per image)"
    max_tokens = default_max_tokens(model) if max_tokens is None else max_tokens
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        records = [None] * (stop - start)
        ready = []  # (input index, name, [(line index, processed)], load seconds)
        for i in range(start, stop):
            name = names[i] if names is not None else _default_name(images[i])
            if errors is not None and errors[i] is not None:
                records[i - start] = {"image": name, "error": errors[i]}
                continue
            t0 = time.time()
            try:
                special = not_a_regular_file(images[i])
                if special:  # opening a FIFO would wait forever for a writer; a device could be endless
                    raise ImageError(f"{name}: not a regular file ({special}); skipped")
                views = load_views(model, images[i], mode, max_words, whole, name=name)
            except ImageError as e:  # its message names the file
                records[i - start] = {"image": name, "error": str(e)}
                continue
            except OSError as e:  # permission denied, a directory that vanished, ...
                records[i - start] = {"image": name, "error": f"{type(e).__name__}: {e}"}
                continue
            except Exception as e:  # a bug, or an image some library chokes on: this image fails, the run goes on
                records[i - start] = {"image": name, "error": _unexpected(e)}
                continue
            ready.append((i, name, views, time.time() - t0))
        on_token = None if callback is None else (lambda r, tok, text: callback(ready[r][0], tok, text))
        gen_kwargs = dict(max_tokens=max_tokens, no_repeat_ngram_size=no_repeat_ngram,
                          no_repeat_window=no_repeat_window, decoder=decoder, **kwargs)
        try:
            outs = generate_views(model, tokenizer, [r[2] for r in ready], [prompts[r[0]] for r in ready],
                                  batch_size, callback=on_token, **gen_kwargs)
        except Exception as e:
            # some image of the batch broke generation: read them one at a time, so only that one fails
            # (a lone image is not generated twice: the error is its own)
            outs = [{"error": f"{ready[0][1]}: {_unexpected(e, 'while generating')}"}] if len(ready) == 1 else []
            for i, name, views, _ in (ready if len(ready) > 1 else []):
                one_cb = None if callback is None else (lambda _r, tok, text, i=i: callback(i, tok, text))
                try:
                    outs += generate_views(model, tokenizer, [views], [prompts[i]], batch_size, callback=one_cb,
                                           **gen_kwargs)
                except Exception as e1:
                    outs.append({"error": f"{name}: {_unexpected(e1, 'while generating')}"})
        for (i, name, views, load_s), out in zip(ready, outs):
            if "error" in out:
                records[i - start] = {"image": name, "error": out["error"]}
                continue
            records[i - start] = {
                "image": name, "text": out["text"], "num_tokens": out["num_tokens"], "views": out["views"],
                "finish_reason": out["finish_reason"], "seconds": load_s + out["seconds"],
                "vision_tokens": max(1, sum(count_vision_tokens(model.encoder.config, p) for _, p in views))}
            if "confidence" in out:
                records[i - start]["confidence"] = round(out["confidence"], 4)
        yield from records
