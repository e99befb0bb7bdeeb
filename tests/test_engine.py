"""
Generation engine: the cached batched loop against the naive re-forward reference, the encoder
running once per image, batching, the logit rules (no-repeat n-grams, no <|image|>), stopping,
max_tokens, sampling and streaming. Small random models; no timing assertions.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from nanoocr import engine
from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
from nanoocr.engine import banned_ngram_tokens, generate, naive_generate
from nanoocr.gpt import GPTConfig
from nanoocr.image_process import process_for_encoder
from nanoocr.model import build_vlm
from nanoocr.tokenizer import Tokenizer

CORPUS = ["the quick brown fox jumps over the lazy dog 0123456789 Free OCR. receipt total cash change",
          "Convert the document to markdown. OCR this image. hello world, lines of text"] * 30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train_from_iterator(iter(CORPUS), 320)


@pytest.fixture(scope="module")
def vlm(tok):
    torch.manual_seed(0)
    enc = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    gpt = GPTConfig(sequence_len=128, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=4, n_kv_head=2, n_embd=enc.out_dim)
    model = build_vlm(enc, gpt, tok.image_id, proj_std=0.05)
    # nanochat's lm_head init (std 0.001) leaves near-ties between logits; a wider head makes greedy
    # choices decisive, so "same tokens" compares the computation rather than rounding noise
    torch.nn.init.normal_(model.gpt.lm_head.weight, std=0.5)
    return model.eval()


def make_images(vlm, sizes, mode=(32, 64), seed=0):
    rng = np.random.default_rng(seed)
    cfg = vlm.encoder.config
    pils = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    return [process_for_encoder(im, m, cfg)
            for im, m in zip(pils, mode if isinstance(mode, list) else [mode] * len(pils))]


PROMPTS = ["Free OCR.", "Convert the document to markdown. OCR this image.", "x"]


def test_cached_equals_naive_greedy(vlm, tok):
    images = make_images(vlm, [(32, 64), (40, 90), (20, 50)])
    cached = generate(vlm, tok, images, PROMPTS, max_tokens=20)
    naive = naive_generate(vlm, tok, images, PROMPTS, max_tokens=20)
    for c, n in zip(cached, naive):
        assert c["ids"] == n["ids"]
        assert c["text"] == n["text"] == tok.decode(c["ids"])
        assert c["num_tokens"] == len(c["ids"]) > 0
    assert len({tuple(c["ids"]) for c in cached}) == 3, "three different images/prompts gave identical outputs"
    # views of different sizes (one encoder call per image, different placeholder counts), and
    # the no-repeat rule on: both loops must apply it identically
    images = make_images(vlm, [(40, 90), (32, 64)], mode=[(64, 64), (32, 128)])
    cached = generate(vlm, tok, images, "Free OCR.", max_tokens=12, no_repeat_ngram_size=3, no_repeat_window=8)
    naive = naive_generate(vlm, tok, images, "Free OCR.", max_tokens=12, no_repeat_ngram_size=3, no_repeat_window=8)
    assert [c["ids"] for c in cached] == [n["ids"] for n in naive]


class EncoderCounter:
    """Counts images going through the encoder's two entry points."""

    def __init__(self, monkeypatch, encoder):
        self.images = 0
        embed_image, embed_batch = encoder.embed_image, encoder.embed_batch

        def count_image(global_view, tiles=None, grid=None):
            self.images += 1
            return embed_image(global_view, tiles, grid)

        def count_batch(pixel_values):
            self.images += pixel_values.shape[0]
            return embed_batch(pixel_values)

        monkeypatch.setattr(encoder, "embed_image", count_image)
        monkeypatch.setattr(encoder, "embed_batch", count_batch)


def test_encoder_runs_once_per_image(vlm, tok, monkeypatch):
    counter = EncoderCounter(monkeypatch, vlm.encoder)
    same = make_images(vlm, [(32, 64)] * 3)  # same size: one batched call
    generate(vlm, tok, same, "Free OCR.", max_tokens=10)
    assert counter.images == 3
    counter.images = 0
    mixed = make_images(vlm, [(32, 64), (200, 460)], mode=[(32, 64), "gundam"])  # per-image calls
    assert mixed[1]["tiles"] is not None  # Gundam: tiles + global view are one image, encoded once
    generate(vlm, tok, mixed, "Free OCR.", max_tokens=10)
    assert counter.images == 2
    counter.images = 0
    generate(vlm, tok, torch.stack([im["global_view"] for im in same]), "Free OCR.", max_tokens=10)
    assert counter.images == 3
    # the counter does see re-encoding: the naive loop encodes once per generated token
    counter.images = 0
    out = naive_generate(vlm, tok, same[:1], "Free OCR.", max_tokens=5)
    assert counter.images == out[0]["num_tokens"] == 5


def test_batch_of_different_prompts_equals_one_by_one(vlm, tok):
    for sizes in ([(32, 64), (40, 90), (20, 50)], [(32, 64)] * 3):  # different images; same-size (stacked)
        images = make_images(vlm, sizes, seed=len(sizes[0]) + sizes[1][1])
        batch = generate(vlm, tok, images, PROMPTS, max_tokens=16)
        for im, p, b in zip(images, PROMPTS, batch):
            single = generate(vlm, tok, [im], p, max_tokens=16)[0]
            assert single["ids"] == b["ids"], (p, single["text"], b["text"])


def test_banned_ngram_tokens_by_hand():
    g = [5, 6, 7, 8, 5, 6, 7]
    assert banned_ngram_tokens(g, 4) == {8}            # 5 6 7 was followed by 8
    assert banned_ngram_tokens(g, 2) == {8}            # 7 -> 8
    assert banned_ngram_tokens(g, 4, window=6) == set()  # the earlier 5 6 7 8 starts outside the window
    assert banned_ngram_tokens(g, 4, window=7) == {8}
    assert banned_ngram_tokens([1, 2, 1, 3, 1], 2) == {2, 3}
    assert banned_ngram_tokens([4, 4, 4], 3) == {4}
    assert banned_ngram_tokens([4, 4], 3) == set()     # shorter than n
    assert banned_ngram_tokens(g, 0) == set()          # off


def test_incremental_ngram_index_equals_the_scan():
    rng = np.random.default_rng(0)
    for n, window in [(1, 0), (2, 0), (3, 5), (4, 12), (2, 1)]:
        seq = rng.integers(0, 4, 80).tolist()  # 4 symbols: plenty of repeats
        index = engine.NgramIndex(n, window)
        for t in range(len(seq)):
            assert index.banned(seq[:t]) == banned_ngram_tokens(seq[:t], n, window), (n, window, t)


class ConstantLogits(torch.nn.Module):
    """Stands in for the VLM: the real model runs, then chosen logits are overridden, so a test can
    force what greedy decoding would pick at each step."""

    def __init__(self, vlm, edit):
        super().__init__()
        self.vlm, self.edit, self.calls = vlm, edit, 0
        self.encoder, self.gpt = vlm.encoder, vlm.gpt

    def get_device(self):
        return self.vlm.get_device()

    def encode_images(self, images):
        return self.vlm.encode_images(images)

    def forward(self, *args, **kwargs):
        logits = self.vlm(*args, **kwargs).clone()
        self.edit(logits, self.calls)
        self.calls += 1
        return logits


def test_no_repeat_rule_blocks_a_constructed_repeat(vlm, tok):
    images = make_images(vlm, [(32, 64)])

    def loop(logits, call):  # every step: token 7 wins by far -> "7 7 7 7 ..."
        logits[..., 7] += 100.0
    plain = generate(ConstantLogits(vlm, loop), tok, images, "Free OCR.", max_tokens=12)[0]
    assert plain["ids"] == [7] * 12
    guarded = generate(ConstantLogits(vlm, loop), tok, images, "Free OCR.", max_tokens=12, no_repeat_ngram_size=3)[0]
    ids = guarded["ids"]
    assert len(ids) == 12 and ids[:3] == [7, 7, 7] and ids[3] != 7
    trigrams = [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]
    assert len(trigrams) == len(set(trigrams)), f"a trigram repeats despite the rule: {ids}"
    # with a window the ban only looks back that far: 7 returns once the old 7-7-7 slides out
    windowed = generate(ConstantLogits(vlm, loop), tok, images, "Free OCR.", max_tokens=12, no_repeat_ngram_size=2,
                        no_repeat_window=3)[0]["ids"]
    for t in range(2, len(windowed)):
        assert windowed[t] not in banned_ngram_tokens(windowed[:t], 2, 3)
    assert windowed.count(7) > 2


def test_max_tokens_stop_and_image_token_masked(vlm, tok):
    end = tok.encode_special("<|assistant_end|>")
    images = make_images(vlm, [(32, 64)] * 3)

    def edit(logits, call):
        logits[..., tok.image_id] += 1000.0   # the model "wants" a placeholder: must never come out
        if call == 3:
            logits[1, -1, end] += 2000.0      # row 1 ends its answer at its 4th token
    out = generate(ConstantLogits(vlm, edit), tok, images, "Free OCR.", max_tokens=9)
    assert [o["num_tokens"] for o in out] == [9, 3, 9]
    assert [o["finish_reason"] for o in out] == ["length", "stop", "length"]
    for o in out:
        assert tok.image_id not in o["ids"] and end not in o["ids"]
    assert generate(vlm, tok, images[:1], "Free OCR.", max_tokens=1)[0]["num_tokens"] == 1
    assert generate(vlm, tok, images[:1], "Free OCR.", max_tokens=0)[0]["ids"] == []


def test_sampling_is_seeded_and_top_k_1_is_greedy(vlm, tok):
    images = make_images(vlm, [(32, 64)] * 2)
    kw = dict(max_tokens=12, temperature=1.0, top_k=50, top_p=0.9)
    a = generate(vlm, tok, images, "Free OCR.", seed=1, **kw)
    b = generate(vlm, tok, images, "Free OCR.", seed=1, **kw)
    assert [x["ids"] for x in a] == [x["ids"] for x in b]
    greedy = generate(vlm, tok, images, "Free OCR.", max_tokens=12)
    top1 = generate(vlm, tok, images, "Free OCR.", max_tokens=12, temperature=0.7, top_k=1, seed=3)
    assert [x["ids"] for x in greedy] == [x["ids"] for x in top1]
    # top_p keeps the smallest set holding p of the mass: a tiny p leaves only the top token
    tiny_p = generate(vlm, tok, images, "Free OCR.", max_tokens=12, temperature=1.0, top_p=1e-6, seed=5)
    assert [x["ids"] for x in greedy] == [x["ids"] for x in tiny_p]


def test_streaming_callback(vlm, tok):
    images = make_images(vlm, [(32, 64), (40, 90)])
    seen = {0: [], 1: []}
    last_text = {}

    def cb(row, token, text):
        seen[row].append(token)
        last_text[row] = text
    out = generate(vlm, tok, images, PROMPTS[:2], max_tokens=10, callback=cb)
    for row in (0, 1):
        assert seen[row] == out[row]["ids"]
        assert last_text[row] == out[row]["text"]


def test_generate_restores_training_mode_and_checks_length(vlm, tok):
    images = make_images(vlm, [(32, 64)])
    vlm.train()
    generate(vlm, tok, images, "Free OCR.", max_tokens=2)
    assert vlm.training
    vlm.eval()
    with pytest.raises(AssertionError, match="max_tokens"):
        generate(vlm, tok, images, "Free OCR.", max_tokens=vlm.gpt.cos.size(1))


def test_looping_chunks_are_found_and_real_text_is_not():
    from nanoocr.engine import _looping
    assert _looping("were knownownownown", 4) == "own"
    assert _looping("abababab", 4) == "ab"
    assert _looping("1,000,000 dollars", 4) is None
    assert _looping("........", 4) is None and _looping("10000000", 4) is None
    assert _looping("the cat sat on the mat", 4) is None


def test_token_logprobs_are_the_models_own_and_the_cache_changes_nothing(vlm, tok):
    """Every answer token's log-probability (the confidence's source, issue 26): one per token, <= 0,
    the same from the cached loop and the naive re-forward, and for greedy decoding the largest
    log-probability of that step (the rules only ban, so greedy takes the top unbanned token)."""
    images = make_images(vlm, [(32, 64), (40, 90)])
    cached = generate(vlm, tok, images, "Free OCR.", max_tokens=15)
    naive = naive_generate(vlm, tok, images, "Free OCR.", max_tokens=15)
    for c, n in zip(cached, naive):
        assert len(c["logprobs"]) == c["num_tokens"] > 0
        assert all(lp <= 1e-6 for lp in c["logprobs"])
        assert np.allclose(c["logprobs"], n["logprobs"], atol=1e-4)
        assert abs(c["mean_logprob"] - float(np.mean(c["logprobs"]))) < 1e-9
    # greedy picks the argmax: re-run the model on prompt + answer and check each step's max
    with torch.no_grad():
        embeds_, ids_, mask_, _ = engine._start(vlm, tok, images[:1], ["Free OCR."], 15, 0.0, None, None, 0, 0, None, None)
        full = torch.cat([ids_, torch.tensor([cached[0]["ids"]])], 1)
        logits = vlm(full, image_embeds=embeds_, attention_mask=torch.ones_like(full)).float()
        logp = logits.log_softmax(-1)[0, ids_.size(1) - 1:-1]
    top = logp.max(-1).values.tolist()
    assert np.allclose(cached[0]["logprobs"], top[:len(cached[0]["logprobs"])], atol=1e-4)
    # an empty answer has no mean
    assert generate(vlm, tok, images[:1], "Free OCR.", max_tokens=0)[0]["mean_logprob"] is None
