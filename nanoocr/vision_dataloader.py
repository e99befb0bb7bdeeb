"""
The training data generator: samples {image, prompt, answer} -> padded token batches with
answer-only targets and the pixel tensors, deterministic, DDP-sharded and resumable.

Where masking and sharding bugs silently ruin training, so the rules are few and tested:
- One vision sample per row; rows are right-padded to the longest row of the batch, and the
  padding is ignored by the loss (targets -1). Causal attention means right padding never
  influences a real token, so no attention mask is needed in training.
- targets = next token where the loss mask is on (answer + <|assistant_end|>), else -1.
- The placeholder run of every sample has exactly num_image_tokens(config, mode, w, h) tokens.
- Sample indices are global: rank r of W reads indices r, r+W, r+2W, ... (disjoint, complete),
  and the state is just how many of them were consumed — resume continues the identical stream.
- Text-only rows (Stage 2 mixing) are chosen by a hash of (seed, index), so the ratio is exact
  in expectation and identical across resumes and world sizes.
- A bad sample (unreadable image, empty answer) is a counted, logged skip naming the file (or
  fatal with strict=True); an over-long sample is truncated with a counted warning.
Preparation (decode / render, preprocess, tokenize) can run in worker processes so it
overlaps the training step.
"""

import functools
import multiprocessing as mp
import random
import signal
from collections import deque

import torch

from nanoocr.common import print0
from nanoocr.ctc import cell_texts
from nanoocr.deepencoder import grid_size, num_image_tokens
from nanoocr.image_process import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    load_image,
    process_for_encoder,
    view_geometry,
)
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.tokenizer import IMAGE_MARKER, ocr_conversation


class SampleError(ValueError):
    pass


# -----------------------------------------------------------------------------
# Sample sources: picklable functions index -> sample dict (so worker processes can call them)

@functools.lru_cache(maxsize=4)
def _epoch_permutation(n, seed, epoch):
    perm = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(perm)
    return perm


def _record_at(records, seed, shuffle, index):
    n = len(records)
    epoch, i = divmod(index, n)
    return records[_epoch_permutation(n, seed, epoch)[i]] if shuffle else records[i]


def records_source(records, seed=0, shuffle=True):
    """A finite list of samples as an infinite indexed source, reshuffled every epoch."""
    assert len(records) > 0, "records_source needs at least one sample"
    return functools.partial(_record_at, list(records), seed, shuffle)


def is_text_index(seed, index, text_ratio):
    """Whether global sample `index` is a text-only row (a stable hash, not a stateful RNG)."""
    if text_ratio <= 0:
        return False
    return random.Random(seed * 7_919 + index * 104_729 + 17).random() < text_ratio


# -----------------------------------------------------------------------------
# One sample -> token ids, loss mask, pixels

def sample_name(sample):
    """How errors and logs name a sample: its image path, else its id (images held as bytes / PIL)."""
    image = sample.get("image")
    return image if isinstance(image, str) else str(sample.get("id", "<sample>"))


def prepare_vision(sample, tokenizer, encoder_config, mode, max_pixels=DEFAULT_MAX_PIXELS):
    """{image, prompt, answer} -> dict(ids, mask, image (processed), n_image_tokens, name, answer);
    a sample with glyph boxes (the renderer's pages) also gets "cells": the characters under each
    vision token of its global view (ctc.cell_texts, for the cell CTC loss)."""
    name = sample_name(sample)
    answer = sample.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise SampleError(f"{name}: empty answer")
    image = load_image(sample["image"], max_pixels=max_pixels, name=name)  # ImageError names the file
    processed = process_for_encoder(image, mode, encoder_config)  # as engine.preprocess does for reading
    w, h = image.size
    n_img = num_image_tokens(encoder_config, mode, w, h)
    # the image goes where the dataset's <image> marker was: almost always first ("prompt_before"
    # holds any text that came before it, see tasks/common.py)
    user = sample.get("prompt_before", "") + IMAGE_MARKER + "\n" + (sample.get("prompt") or DEFAULT_PROMPT)
    ids, mask = tokenizer.render_conversation(ocr_conversation(user, answer), n_img)
    out = dict(ids=ids, mask=mask, image=processed, n_image_tokens=n_img, name=name, answer=answer)
    if sample.get("boxes") is not None:
        gv = processed["global_view"]
        out["cells"] = cell_texts(sample["boxes"], answer, grid_size(encoder_config, gv.shape[-2], gv.shape[-1]),
                                  view_geometry(processed), encoder_config.stride)
    return out


def prepare_text(text, tokenizer):
    """A plain document: <|bos|> text, every token after bos is a target."""
    ids = tokenizer.encode(text, prepend=tokenizer.bos_id)
    return dict(ids=ids, mask=[0] + [1] * (len(ids) - 1), image=None, n_image_tokens=0, name="<text>")


def batch_mode(modes, seed, batch):
    """The resolution mode of a rank's `batch`-th batch when a run trains in several (a list): drawn
    by a hash of the batch number, so every row of a batch has one size (one encoder call), every
    rank reads the same mode at a step, and resume draws the same again."""
    if not isinstance(modes, list):
        return modes
    return modes[random.Random(f"mode:{seed}:{batch}").randrange(len(modes))]


def _prepare_index(index, ctx):
    """Worker body: global index -> ("ok", example) or ("skip", reason)."""
    try:
        if is_text_index(ctx["seed"], index, ctx["text_ratio"]):
            return "ok", prepare_text(ctx["get_text"](index), ctx["tokenizer"])
        sample = ctx["get_sample"](index)
        # (a skipped sample shifts the later rows of its rank by one: such a batch mixes two sizes,
        # which collate hands over as a list -- correct, just one encoder call per image)
        mode = batch_mode(ctx["mode"], ctx["seed"], (index // ctx["world_size"]) // ctx["batch_size"])
        return "ok", prepare_vision(sample, ctx["tokenizer"], ctx["encoder_config"], mode, ctx["max_pixels"])
    except (ImageError, SampleError) as e:
        return "skip", str(e)


_WORKER_CTX = None


def _worker_init(ctx):
    global _WORKER_CTX
    _WORKER_CTX = ctx
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle (it saves first)


def _worker_prepare(index):
    return _prepare_index(index, _WORKER_CTX)


# -----------------------------------------------------------------------------
# Batching

def collate(examples, seq_len, pad_id):
    """Examples -> the training batch. Rows are right-padded to the longest one (<= seq_len)."""
    T = max(len(e["ids"]) for e in examples) - 1
    assert T <= seq_len, f"an example of {T + 1} tokens slipped past truncation (seq_len {seq_len})"
    B = len(examples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), -1, dtype=torch.long)
    for i, e in enumerate(examples):
        ids = torch.tensor(e["ids"], dtype=torch.long)
        mask = torch.tensor(e["mask"][1:], dtype=torch.bool)
        n = len(ids) - 1
        input_ids[i, :n] = ids[:-1]
        targets[i, :n] = torch.where(mask, ids[1:], torch.full_like(ids[1:], -1))
    processed = [e["image"] for e in examples if e["image"] is not None]
    images = None
    if processed:
        shapes = {tuple(p["global_view"].shape) for p in processed}
        if len(shapes) == 1 and all(p["tiles"] is None for p in processed):
            images = torch.stack([p["global_view"] for p in processed])  # one batched encoder call
        else:
            images = processed
    return dict(input_ids=input_ids, targets=targets, images=images,
                n_image_tokens=[e["n_image_tokens"] for e in examples],
                n_answer_tokens=int((targets != -1).sum()),
                is_text=[e["image"] is None for e in examples],
                answers=[e["answer"] for e in examples if e["image"] is not None],  # in image order
                cells=([e["cells"] for e in examples if e["image"] is not None]
                       if all("cells" in e for e in examples if e["image"] is not None) else None),
                names=[e["name"] for e in examples])


def vision_data_generator(get_sample, tokenizer, encoder_config, batch_size, seq_len, mode,
                          rank=0, world_size=1, text_ratio=0.0, get_text=None, seed=0,
                          num_workers=0, prefetch=4, strict=False, max_pixels=DEFAULT_MAX_PIXELS,
                          state=None, log=print0):
    """Yields (batch, state). get_sample(index) -> {image, prompt, answer}; get_text(index) -> str.
    mode: one resolution mode, or a list of them to draw one per batch (batch_mode).
    state = {"consumed": k} means this rank has read its first k indices; pass it back to resume.
    stats of skips / truncations live in state too (cumulative)."""
    assert text_ratio == 0 or get_text is not None, "text_ratio > 0 needs a get_text source"
    state = dict(state or {"consumed": 0, "skipped": 0, "truncated": 0})
    ctx = dict(get_sample=get_sample, get_text=get_text, tokenizer=tokenizer, encoder_config=encoder_config,
               mode=mode, seed=seed, text_ratio=text_ratio, max_pixels=max_pixels, world_size=world_size,
               batch_size=batch_size)
    pad_id = tokenizer.bos_id

    def rank_index(k):
        return rank + world_size * k

    if num_workers > 0:
        pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(
            num_workers, initializer=_worker_init, initargs=(ctx,))
        pending = deque()
        next_k = state["consumed"]

        def results():
            nonlocal next_k
            while True:
                while len(pending) < prefetch * batch_size:
                    pending.append(pool.apply_async(_worker_prepare, (rank_index(next_k),)))
                    next_k += 1
                yield pending.popleft().get()
    else:
        pool = None

        def results():
            k = state["consumed"]
            while True:
                yield _prepare_index(rank_index(k), ctx)
                k += 1
    try:
        it = results()
        while True:
            examples = []
            while len(examples) < batch_size:
                status, ex = next(it)
                state["consumed"] += 1
                if status == "skip":
                    state["skipped"] += 1
                    if strict:
                        raise SampleError(f"bad sample (strict mode): {ex}")
                    log(f"skipping sample {state['skipped']}: {ex}")
                    continue
                if len(ex["ids"]) > seq_len + 1 and ex["image"] is None:
                    # text rows are plain documents: cutting them to the row length is the design
                    ex["ids"], ex["mask"] = ex["ids"][:seq_len + 1], ex["mask"][:seq_len + 1]
                elif len(ex["ids"]) > seq_len + 1:
                    n_prefix = ex["mask"].index(1) if 1 in ex["mask"] else len(ex["ids"])
                    if n_prefix >= seq_len:
                        state["skipped"] += 1
                        msg = f"{ex['name']}: image + prompt alone take {n_prefix} tokens > seq_len {seq_len}"
                        if strict:
                            raise SampleError(msg)
                        log(f"skipping sample {state['skipped']}: {msg}")
                        continue
                    state["truncated"] += 1
                    log(f"truncating {ex['name']} from {len(ex['ids'])} to {seq_len + 1} tokens "
                        f"({state['truncated']} truncated so far)")
                    ex["ids"], ex["mask"] = ex["ids"][:seq_len + 1], ex["mask"][:seq_len + 1]
                examples.append(ex)
            yield collate(examples, seq_len, pad_id), dict(state)
    finally:
        if pool is not None:
            try:
                pool.terminate()
            except AssertionError:
                # CPython's teardown refuses to run when its result thread has already exited with
                # jobs still queued (seen in long pytest sessions); the workers still must go
                for p in pool._pool:
                    p.kill()
