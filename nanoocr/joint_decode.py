"""
Reading strips with the CTC head too: joint CTC/attention beam search, and the head on its own.

A model trained with the CPU recipe has two readers of the same vision tokens: the GPT (it writes
tokens, can invent fluent text the image does not hold) and the linear CTC head (nanoocr/ctc.py: it
only labels frames, cannot invent, but knows no spelling). Hybrid decoding, as speech recognisers do
it, runs a beam search over the GPT's tokens and scores each hypothesis h by

    score(h) = w * log P_ctc(the strip's text begins with h) + (1 - w) * log P_gpt(h)

and a finished hypothesis by w * log P_ctc(the text is exactly h) + (1 - w) * log P_gpt(h <end>).
The CTC term drops fast for text the frames do not show, so it vetoes invented words and keeps the
GPT from stopping early or running on. Both terms only fall as h grows, so a strip is done as soon as
its best finished hypothesis beats every live one (nothing live can overtake it). The empty answer is
a hypothesis like any other: on a strip with no ink it wins, and the strip reads as "".

Each result carries a confidence in (0, 1]: exp(score / (tokens + 1)), the geometric mean of the
joint per-decision probability — near 1 where both readers agree, low where they fight.

WEIGHT and BEAM were chosen on the renderer's validation split (dev/LOG.md, "joint decoding").
"""

import math

import torch
import torch.nn.functional as F

from nanoocr.ctc import PrefixScorer, greedy_decode
from nanoocr.engine import (
    _batch_prompts,
    _inference,
    _looping,
    _to_device,
    banned_ngram_tokens,
)

WEIGHT = 0.5   # w above
BEAM = 4       # hypotheses kept per strip
DECODERS = ("joint", "gpt", "ctc")


def default_decoder(model, mode):
    """The decoder the model was trained to be read with (its config's ctc.decoder: joint unless its
    recipe chose otherwise on validation images) where it has a CTC head and reads fixed-size strips
    (the head reads one line left to right), else the GPT alone."""
    return model.ctc_decoder if model.ctc_head is not None and isinstance(mode, tuple) else "gpt"


def check_decoder(model, mode, decoder):
    """An explicit --decoder the model or mode cannot do is a usage error, never a silent fallback."""
    if decoder not in DECODERS:
        raise ValueError(f"--decoder={decoder!r}: one of {', '.join(DECODERS)}")
    if decoder != "gpt" and model.ctc_head is None:
        raise ValueError(f"--decoder={decoder} needs a CTC head, and this model has none (it was trained with "
                         f"ctc_weight=0): use --decoder=gpt")
    if decoder != "gpt" and model.ctc_features == "cells":
        raise ValueError(f"--decoder={decoder}: this model's CTC head is the page recipe's cell head (a training "
                         f"signal, no reader of lines): use --decoder=gpt")
    if decoder != "gpt" and not isinstance(mode, tuple):
        raise ValueError(f"--decoder={decoder} reads one-line strips (a fixed HxW mode); mode {mode!r} reads "
                         f"whole images: use --decoder=gpt")


def _strips(model, images):
    """process_image dicts of same-size single views (or a [B, 3, H, W] tensor) -> (pixels, max_chars)."""
    if torch.is_tensor(images):
        return _to_device(model, images), [None] * images.size(0)
    assert all(im.get("tiles") is None for im in images), "CTC decoding reads single views, not Gundam tiles"
    shapes = {tuple(im["global_view"].shape) for im in images}
    assert len(shapes) == 1, f"CTC decoding reads same-size strips, got view sizes {sorted(shapes)}"
    pixels = _to_device(model, torch.stack([im["global_view"] for im in images]))
    return pixels, [im.get("max_chars") for im in images]


@torch.inference_mode()
def ctc_generate(model, tokenizer, images, autocast_dtype=None, **_):
    """The CTC head alone: every strip's best frame path. Returns engine.generate's dicts plus
    confidence (the best path's per-frame probability, geometric mean)."""
    with _inference(model, autocast_dtype):
        pixels, _ = _strips(model, images)
        _, log_probs = model.encode_with_ctc(pixels)
    log_probs = log_probs.float()
    best = log_probs.max(-1).values.mean(0).exp().tolist()
    out = []
    for text, conf in zip(greedy_decode(log_probs), best):
        ids = tokenizer.encode(text) if text else []
        out.append(dict(text=text, ids=ids, num_tokens=len(ids), finish_reason="stop", confidence=conf))
    return out


@torch.inference_mode()
def joint_generate(model, tokenizer, images, prompts, max_tokens=64, no_repeat_ngram_size=0, no_repeat_window=0,
                   weight=WEIGHT, beam=BEAM, autocast_dtype=None, callback=None, **_):
    """Beam search over the GPT scored with the CTC prefix probability (module docstring), batched over
    strips: B strips x `beam` hypotheses are rows of one GPT batch with one KV cache, reordered as
    hypotheses are kept. images: same-size strips (process_image dicts, "max_chars" honoured as in
    engine.generate, or a tensor); prompts: one string or one per strip. callback(row, token_id, text)
    is called once per strip with its final text (a beam's text is not final until the search ends).
    Returns engine.generate's dicts plus confidence."""
    assert 0.0 <= weight <= 1.0 and beam >= 1, f"weight {weight} in [0, 1], beam {beam} >= 1"
    end_id = tokenizer.encode_special("<|assistant_end|>")
    with _inference(model, autocast_dtype):
        pixels, max_chars = _strips(model, images)
        embeds, log_probs = model.encode_with_ctc(pixels)
        B, K = pixels.size(0), beam
        scorer = PrefixScorer(log_probs)
        ids, mask = _batch_prompts(tokenizer, prompts, list(embeds.unbind(0)))
        device = model.get_device()
        # every strip's prompt K times: row b*K + k is hypothesis k of strip b
        rows = torch.arange(B * K, device=device) // K
        ids, mask, embeds = ids.to(device)[rows], mask.to(device)[rows], embeds[rows]
        L = ids.size(1)
        assert L + max_tokens <= model.gpt.cos.size(1), f"prompt {L} + max_tokens {max_tokens} exceed the model's positions"
        cache = model.gpt.new_kv_cache(B * K, L + max_tokens)
        logits = model(ids, image_embeds=list(embeds.unbind(0)), kv_cache=cache, attention_mask=mask)[:, -1]

        # live hypotheses, row-aligned with the cache: token ids, text, GPT log-prob, CTC state, joint score
        toks = [[] for _ in range(B * K)]
        texts = [""] * (B * K)
        att = torch.zeros(B * K)
        state = scorer.empty(rows.cpu())
        score = torch.full((B * K,), -math.inf)
        score[::K] = 0.0  # one live hypothesis per strip to start with (K copies would fill the beam with twins)
        done = [False] * B
        best = [None] * B  # per strip: (score, token ids, text, finish reason) of the best finished hypothesis

        def finish(b, s, t, text, reason):
            if best[b] is None or s > best[b][0]:
                best[b] = (s, t, text, reason)

        for n in range(max_tokens + 1):
            lp = F.log_softmax(logits.float(), dim=-1).cpu()
            full = scorer.full(state).tolist()  # log P_ctc(the text is exactly this hypothesis), every row
            lp[:, tokenizer.image_id] = -math.inf
            cand_row, cand_tok, cand_att, cand_text = [], [], [], []
            for r in range(B * K):
                b = r // K
                if done[b] or score[r] == -math.inf:
                    continue
                # the end of the answer, scored on the CTC probability that the text is exactly this
                end = weight * full[r] + (1 - weight) * float(att[r] + lp[r, end_id])
                finish(b, end, toks[r], texts[r], "stop")
                if n == max_tokens:
                    continue  # out of tokens: nothing grows further
                row = lp[r].clone()
                if no_repeat_ngram_size > 0:
                    banned = banned_ngram_tokens(toks[r], no_repeat_ngram_size, no_repeat_window)
                    if banned:
                        row[list(banned)] = -math.inf
                row[end_id] = -math.inf
                top = row.topk(K + 1)
                for v, t in zip(top.values.tolist(), top.indices.tolist()):
                    if v == -math.inf:
                        continue
                    text = tokenizer.decode(toks[r] + [t])
                    if (max_chars[b] is not None and len(text) > max_chars[b]) or (max_chars[b] is not None and _looping(text, 4)):
                        # more text than the strip's ink can hold, or a loop: the rest would be invented,
                        # so this hypothesis ends here (as engine.generate stops such a row)
                        cut = weight * full[r] + (1 - weight) * float(att[r])
                        finish(b, cut, toks[r], texts[r], "length")
                        continue
                    cand_row.append(r)
                    cand_tok.append(t)
                    cand_att.append(float(att[r]) + v)
                    cand_text.append(text)
            if not cand_row:
                break
            # CTC prefix scores of every candidate at once. A token usually appends characters; where the
            # decoded text is not an extension (an incomplete UTF-8 sequence resolving), start over
            grow = [t[len(texts[r]):] if t.startswith(texts[r]) else None for r, t in zip(cand_row, cand_text)]
            base = scorer.select(state, cand_row)
            redo = [i for i, g in enumerate(grow) if g is None]
            if redo:
                fresh = scorer.extend_text(scorer.empty(base["strip"][redo]), [cand_text[i] for i in redo])
                for k in base:
                    base[k] = base[k].clone()
                    base[k][redo] = fresh[k]
            cand_state = scorer.extend_text(base, [g or "" for g in grow])
            joint = weight * cand_state["prefix"] + (1 - weight) * torch.tensor(cand_att)
            # keep the K best candidates of every strip; a strip whose best finished hypothesis beats all
            # of them is done (both terms only fall as a hypothesis grows)
            keep = torch.full((B * K,), -1, dtype=torch.long)
            new_score = torch.full((B * K,), -math.inf)
            by_strip = {}
            for i, r in enumerate(cand_row):
                by_strip.setdefault(r // K, []).append(i)
            for b, idx in by_strip.items():
                idx = sorted(idx, key=lambda i: -float(joint[i]))[:K]
                if best[b] is not None and best[b][0] >= float(joint[idx[0]]):
                    done[b] = True
                    continue
                for k, i in enumerate(idx):
                    keep[b * K + k] = i
                    new_score[b * K + k] = joint[i]
            for b in range(B):
                if b not in by_strip:
                    done[b] = True
            if all(done):
                break
            # rows with no candidate copy any row (their score is -inf, they are never read)
            src = torch.tensor([cand_row[i] if i >= 0 else r for r, i in enumerate(keep.tolist())])
            cache.reorder(src.to(device))
            nxt = [cand_tok[i] if i >= 0 else end_id for i in keep.tolist()]
            toks = [toks[cand_row[i]] + [cand_tok[i]] if i >= 0 else toks[r] for r, i in enumerate(keep.tolist())]
            texts = [cand_text[i] if i >= 0 else texts[r] for r, i in enumerate(keep.tolist())]
            att = torch.tensor([cand_att[i] if i >= 0 else 0.0 for i in keep.tolist()])
            kept = keep.clamp_min(0)
            state = {k: v[kept] for k, v in cand_state.items()}
            state["strip"] = rows.cpu()  # (a dead row's copied state is never read)
            score = new_score
            logits = model(torch.tensor(nxt, dtype=torch.long, device=device)[:, None], kv_cache=cache)[:, -1]

    out = []
    for b in range(B):
        s, t, text, reason = best[b] if best[b] is not None else (-math.inf, [], "", "length")
        conf = math.exp(s / (len(t) + 1)) if s > -math.inf else 0.0
        out.append(dict(text=text, ids=t, num_tokens=len(t), finish_reason=reason, confidence=conf))
        if callback is not None:
            callback(b, t[-1] if t else end_id, text)
    return out


def read_strips(model, tokenizer, images, prompts, decoder="gpt", **kwargs):
    """One batch of views through the chosen decoder (engine.generate for "gpt")."""
    from nanoocr.engine import generate
    joint_only = {k: kwargs.pop(k) for k in ("weight", "beam") if k in kwargs}
    if decoder == "gpt":
        return generate(model, tokenizer, images, prompts, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_k", "top_p", "seed")}
    kwargs.update(joint_only)
    if decoder == "ctc":
        return ctc_generate(model, tokenizer, images, **kwargs)
    return joint_generate(model, tokenizer, images, prompts, **kwargs)
