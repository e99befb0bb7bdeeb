"""
Generation: images + prompts -> text, batched, with the vision embeddings computed once per image
and the GPT's KV cache (dev/design.md §5, inference paragraph).

    results = generate(model, tokenizer, images, prompts, max_tokens=256)
    results[i] = {"text", "ids", "num_tokens", "finish_reason", "logprobs", "mean_logprob"}

How one call runs:
1. encode every image exactly once (same-size single views in one batched encoder call);
2. render each row's prompt with exactly as many <|image|> placeholders as its image produced
   embeddings (the embeddings themselves are the count, so no mode bookkeeping can disagree);
3. left-pad the prompts to one length with an attention mask (1 real / 0 pad), so every row's
   next token sits in the last column; the KV cache remembers which keys were padding;
4. prefill once, then feed one token per row per step until every row has said <|assistant_end|>
   or max_tokens is reached. Finished rows keep being fed (the batch stays rectangular) but their
   outputs are ignored.
Logit rules at every step: <|image|> is never generated (its logit is -inf: a placeholder in the
output would ask the model for an image it does not have), and an optional sliding-window
no-repeat n-gram rule (DeepSeek-OCR's guard against repetition loops) bans any token that would
complete an n-gram already present among the last `window` generated tokens.

naive_generate is the reference: no cache, the image re-encoded and the whole sequence re-run for
every token. It is slow on purpose and exists for the tests and the cached-vs-naive benchmark.
"""

import contextlib

import torch

from nanoocr.image_process import process_for_encoder
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.tokenizer import ocr_conversation

# -----------------------------------------------------------------------------
# Images -> embeddings, once

def _to_device(model, images):
    """Move pixel tensors to the model's device and the encoder's dtype (a bf16 model on GPU
    would otherwise be fed fp32 pixels)."""
    device = model.get_device()
    dtype = next(model.encoder.parameters()).dtype
    if torch.is_tensor(images):
        return images.to(device=device, dtype=dtype)
    out = []
    for im in images:
        im = dict(im)
        im["global_view"] = im["global_view"].to(device=device, dtype=dtype)
        if im.get("tiles") is not None:
            im["tiles"] = im["tiles"].to(device=device, dtype=dtype)
        out.append(im)
    return out


def encode(model, images):
    """Vision embeddings for a batch of images: list of [N_i, D], one per image, each image through
    the encoder exactly once. images: a [B, 3, H, W] tensor of same-size views, or a list of
    process_image dicts. Dicts with no tiles and one common view size are stacked and encoded in
    one batched call (what `read --batch-size` gains from); otherwise one call per image."""
    images = _to_device(model, images)
    if not torch.is_tensor(images):
        assert len(images) > 0, "generate needs at least one image"
        shapes = {tuple(im["global_view"].shape) for im in images}
        if len(shapes) == 1 and all(im.get("tiles") is None for im in images):
            images = torch.stack([im["global_view"] for im in images])
    embeds = model.encode_images(images)
    return list(embeds.unbind(0)) if torch.is_tensor(embeds) else list(embeds)


def prompt_ids(tokenizer, prompt, num_image_tokens):
    """<|bos|><|user_start|><|image|>×N\\n{prompt}<|user_end|><|assistant_start|> (dev/design.md §3)."""
    return tokenizer.render_for_completion(ocr_conversation(prompt), num_image_tokens)


def _batch_prompts(tokenizer, prompts, embeds):
    """Prompt strings (one, or one per image) -> left-padded ids and attention mask [B, L]."""
    B = len(embeds)
    if isinstance(prompts, str):
        prompts = [prompts] * B
    prompts = list(prompts)
    assert len(prompts) == B, f"{len(prompts)} prompts for {B} images (give one prompt, or one per image)"
    rows = [prompt_ids(tokenizer, p, e.size(0)) for p, e in zip(prompts, embeds)]
    L = max(len(r) for r in rows)
    pad = tokenizer.bos_id  # any id that is not <|image|>: padded keys are masked out
    ids = torch.tensor([[pad] * (L - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


# -----------------------------------------------------------------------------
# Logit rules and sampling

def banned_ngram_tokens(generated, n, window=0):
    """Tokens that would complete an n-gram already present in the last `window` generated tokens
    (window 0 = all of them). The current (n-1)-token suffix is matched against every earlier
    position in the window; whatever followed it there is banned now. Only generated tokens count:
    the prompt is mostly image placeholders, and a transcript may legitimately echo the prompt."""
    if n <= 0 or len(generated) < n:
        return set()
    start = max(0, len(generated) - window) if window > 0 else 0
    prefix = tuple(generated[len(generated) - (n - 1):]) if n > 1 else ()
    banned = set()
    # n-grams generated[i : i+n] that lie fully inside the window, excluding the one being formed
    for i in range(start, len(generated) - n + 1):
        if tuple(generated[i:i + n - 1]) == prefix:
            banned.add(generated[i + n - 1])
    return banned


class NgramIndex:
    """banned_ngram_tokens for one growing sequence, incrementally: every n-gram's start position
    filed under its (n-1)-token prefix, so a step costs O(matches) instead of O(window) (or O(length)
    with no window, where the plain scan would make a long page quadratic)."""

    def __init__(self, n, window=0):
        self.n, self.window = n, window
        self.starts = {}  # (n-1)-gram -> ascending start positions of the n-grams that begin with it
        self.indexed = 0  # n-grams filed so far (they start at 0 .. indexed-1)

    def banned(self, generated):
        n, L = self.n, len(generated)
        if n <= 0 or L < n:
            return set()
        while self.indexed <= L - n:
            i = self.indexed
            self.starts.setdefault(tuple(generated[i:i + n - 1]), []).append(i)
            self.indexed += 1
        start = max(0, L - self.window) if self.window > 0 else 0
        banned = set()
        for i in reversed(self.starts.get(tuple(generated[L - (n - 1):]) if n > 1 else (), ())):
            if i < start:
                break  # ascending positions: everything earlier is outside the window too
            banned.add(generated[i + n - 1])
        return banned


def sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """logits [B, V] (fp32, rules already applied) -> next ids [B]. temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass; the top
        # token always survives (its preceding mass is 0)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _Decoder:
    """Per-row state shared by the cached and the naive loop: logit rules, stopping, streaming."""

    def __init__(self, tokenizer, B, max_tokens, temperature, top_k, top_p, no_repeat_ngram_size,
                 no_repeat_window, seed, callback, device, max_chars=None):
        self.tokenizer = tokenizer
        self.max_chars = max_chars or [None] * B  # per row: the most characters its image can hold
        self.end_id = tokenizer.encode_special("<|assistant_end|>")
        self.image_id = tokenizer.image_id
        self.max_tokens = max_tokens
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        self.ngram = no_repeat_ngram_size
        self.callback = callback
        self.generator = None
        if seed is not None and temperature > 0:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(seed)
        self.out = [[] for _ in range(B)]
        self.logprobs = [[] for _ in range(B)]  # per row: each answer token's log-probability
        self.ngrams = [NgramIndex(no_repeat_ngram_size, no_repeat_window) for _ in range(B)]
        self.done = [max_tokens <= 0] * B
        self.reason = ["length"] * B

    def step(self, logits):
        """logits [B, V] for every row's next token -> next ids [B] (a finished row gets <|assistant_end|>,
        a harmless filler it is fed but never reads)."""
        logits = logits.float().clone()
        raw_logp = logits.log_softmax(dim=-1)  # the model's own belief, before the rules below edit it
        logits[:, self.image_id] = float("-inf")
        if self.ngram > 0:
            for b in range(logits.size(0)):
                if not self.done[b]:
                    banned = self.ngrams[b].banned(self.out[b])
                    if banned:
                        logits[b, list(banned)] = float("-inf")
        nxt = sample_next(logits, generator=self.generator, **self.sampling)
        chosen_logp = raw_logp.gather(1, nxt[:, None]).squeeze(1).tolist()
        nxt = nxt.tolist()
        for b, tok in enumerate(nxt):
            if self.done[b]:
                nxt[b] = self.end_id
                continue
            if tok == self.end_id:
                self.done[b], self.reason[b] = True, "stop"
                continue
            self.out[b].append(tok)
            self.logprobs[b].append(chosen_logp[b])
            if self.callback is not None or self.max_chars[b] is not None:
                text = self.tokenizer.decode(self.out[b])
                if self.max_chars[b] is not None and len(text) > self.max_chars[b]:
                    self.out[b].pop()  # more text than the strip's ink can hold: the rest is invented
                    self.logprobs[b].pop()
                    self.done[b] = True
                    continue
                if self.max_chars[b] is not None and _looping(text, 4):
                    # "knownownownown": a strip's short loop, invented. Stop before this token, as
                    # the cap does, so the final text is exactly the last text streamed
                    self.out[b].pop()
                    self.logprobs[b].pop()
                    self.done[b] = True
                    continue
                if self.callback is not None:
                    self.callback(b, tok, text)
            if len(self.out[b]) >= self.max_tokens:
                self.done[b] = True
        return nxt

    @property
    def finished(self):
        return all(self.done)

    def results(self):
        return [{"text": self.tokenizer.decode(ids), "ids": ids, "num_tokens": len(ids), "finish_reason": r,
                 "logprobs": lp, "mean_logprob": sum(lp) / len(lp) if lp else None}
                for ids, lp, r in zip(self.out, self.logprobs, self.reason)]


def _looping(text, repeats):
    """The 2-4 character chunk that text ends with `repeats` times in a row, or None. Real lines
    hardly ever do ("ownownownown"); a decoder stuck in a loop does it at once. Runs of one character
    ("....", "0000") are not counted."""
    for p in (2, 3, 4):
        tail = text[-p:]
        if len(text) >= p * repeats and len(set(tail)) > 1 and text.endswith(tail * repeats):
            return tail
    return None


def _max_chars(images):
    return None if torch.is_tensor(images) else [im.get("max_chars") for im in images]


@contextlib.contextmanager
def _inference(model, autocast_dtype):
    """Eval mode (restored afterwards) and optional autocast around one generation call."""
    was_training = model.training
    model.eval()
    try:
        if autocast_dtype is None:
            yield
        else:
            with torch.autocast(device_type=model.get_device().type, dtype=autocast_dtype):
                yield
    finally:
        model.train(was_training)


def _start(model, tokenizer, images, prompts, max_tokens, temperature, top_k, top_p, no_repeat_ngram_size,
           no_repeat_window, seed, callback):
    """What the cached and the naive loop share: the images encoded once, the prompts laid out
    left-padded on the model's device, and the per-row decoder. -> (embeds, ids, mask, decoder)."""
    embeds = encode(model, images)
    ids, mask = _batch_prompts(tokenizer, prompts, embeds)
    device = model.get_device()
    ids, mask = ids.to(device), mask.to(device)
    dec = _Decoder(tokenizer, ids.size(0), max_tokens, temperature, top_k, top_p, no_repeat_ngram_size,
                   no_repeat_window, seed, callback, device, _max_chars(images))
    return embeds, ids, mask, dec


# -----------------------------------------------------------------------------
# Public API

@torch.inference_mode()
def generate(model, tokenizer, images, prompts=DEFAULT_PROMPT, max_tokens=256, temperature=0.0, top_k=None,
             top_p=None, no_repeat_ngram_size=0, no_repeat_window=0, seed=None, callback=None,
             autocast_dtype=None):
    """Read a batch of images. images: list of process_image dicts, or a [B, 3, H, W] tensor of
    same-size views. prompts: one string for all, or one per image (the text after the image).
    max_tokens: at most this many answer tokens per row (<|assistant_end|> is not counted).
    no_repeat_ngram_size / no_repeat_window: the no-repeat rule (0 = off; window 0 = everything
    generated so far). seed: for sampling (temperature > 0). callback(row, token_id, text_so_far):
    called for every answer token as it is produced. autocast_dtype: e.g. torch.bfloat16 on GPU.
    A process_image dict with a "max_chars" entry (strips cut by strips.text_strips) ends its row
    before the answer grows past that many characters.
    Returns one dict per image: text, ids (answer tokens), num_tokens, finish_reason ("stop" when
    the model ended the answer, "length" when max_tokens or max_chars cut it), logprobs (each answer
    token's log-probability under the model, before the logit rules and temperature) and
    mean_logprob (their mean; None for an empty answer)."""
    with _inference(model, autocast_dtype):
        embeds, ids, mask, dec = _start(model, tokenizer, images, prompts, max_tokens, temperature, top_k, top_p,
                                        no_repeat_ngram_size, no_repeat_window, seed, callback)
        B, L = ids.shape
        limit = model.gpt.cos.size(1)
        assert L + max_tokens <= limit, (
            f"prompt ({L} tokens, {embeds[0].size(0)} of them image) + max_tokens {max_tokens} exceeds "
            f"the model's {limit} positions; lower max_tokens or use a smaller mode")
        if dec.finished:
            return dec.results()
        kv_cache = model.gpt.new_kv_cache(B, L + max_tokens)  # prompt + every answer token fed back
        logits = model(ids, image_embeds=embeds, kv_cache=kv_cache, attention_mask=mask)
        nxt = dec.step(logits[:, -1])
        while not dec.finished:
            step_ids = torch.tensor(nxt, dtype=torch.long, device=ids.device)[:, None]
            # no attention_mask: new tokens are real, and the cache keeps masking the padding
            logits = model(step_ids, kv_cache=kv_cache)
            nxt = dec.step(logits[:, -1])
        return dec.results()


@torch.inference_mode()
def naive_generate(model, tokenizer, images, prompts=DEFAULT_PROMPT, max_tokens=256, temperature=0.0,
                   top_k=None, top_p=None, no_repeat_ngram_size=0, no_repeat_window=0, seed=None,
                   callback=None, autocast_dtype=None):
    """generate's reference twin: same arguments and results, but every token re-encodes the images
    and re-runs the whole (left-padded) sequence, with no KV cache. Slow by design."""
    with _inference(model, autocast_dtype):
        embeds, ids, mask, dec = _start(model, tokenizer, images, prompts, max_tokens, temperature, top_k, top_p,
                                        no_repeat_ngram_size, no_repeat_window, seed, callback)
        first = True
        while not dec.finished:
            if not first:
                embeds = encode(model, images)  # the point of the naive loop: encode again
            first = False
            logits = model(ids, image_embeds=embeds, attention_mask=mask)
            nxt = torch.tensor(dec.step(logits[:, -1]), dtype=torch.long, device=ids.device)[:, None]
            ids = torch.cat([ids, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        return dec.results()


# -----------------------------------------------------------------------------
# The model's view of an image (reader.py cuts and reads whole files with it)

def preprocess(model, image, mode):
    """A loaded PIL image -> process_image's dict for this model's encoder (image_process.process_for_encoder,
    as training prepares its images)."""
    return process_for_encoder(image, mode, model.encoder.config)
