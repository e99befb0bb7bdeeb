import json
import os

import pytest
import torch
from conftest import FIXTURE_D2

from nanoocr import gpt as gpt_module
from nanoocr.checkpoint_manager import load_nanochat_gpt
from nanoocr.gpt import GPTConfig, build_gpt


def small_gpt(n_head=4, n_kv_head=2, seed=0, vocab=300):
    torch.manual_seed(seed)
    # proj_std > 0 so every layer shapes the output (zero-init projections would hide bugs)
    return build_gpt(GPTConfig(sequence_len=64, vocab_size=vocab, n_layer=2, n_head=n_head, n_kv_head=n_kv_head, n_embd=64),
                     proj_std=0.05).eval()


def test_golden_nanochat_logits():
    ref = torch.load(os.path.join(FIXTURE_D2, "reference_logits.pt"), weights_only=True)
    model, tok, meta = load_nanochat_gpt(os.path.join(FIXTURE_D2, "base_checkpoints", "d2"),
                                         os.path.join(FIXTURE_D2, "tokenizer"))
    assert model.config.n_kv_head == 2 and model.config.n_head == 4  # read from meta, not assumed
    assert model.config.vocab_size == 513 and tok.image_id == 512  # grown by one for <|image|>
    with torch.no_grad():
        logits = model.eval()(ref["idx"])
    assert logits.shape == (1, 32, 513)
    # the old-token logits reproduce nanochat's own forward
    torch.testing.assert_close(logits[..., :512], ref["logits"], atol=1e-4, rtol=0)
    assert ref["logits"].std() > 1.0  # the reference is not near-zero: a wrong model cannot match


def test_golden_before_vocab_growth():
    ref = torch.load(os.path.join(FIXTURE_D2, "reference_logits.pt"), weights_only=True)
    meta = json.load(open(os.path.join(FIXTURE_D2, "base_checkpoints", "d2", "meta_000000.json")))
    sd = torch.load(os.path.join(FIXTURE_D2, "base_checkpoints", "d2", "model_000000.pt"), weights_only=True)
    model = build_gpt(GPTConfig(**meta["model_config"]))
    model.load_state_dict(sd)
    with torch.no_grad():
        logits = model.eval()(ref["idx"])
    torch.testing.assert_close(logits, ref["logits"], atol=1e-4, rtol=0)
    # negative control: an interleaved-pair RoPE (the textbook variant) must NOT match
    orig = gpt_module.apply_rotary_emb

    def interleaved(x, cos, sin):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        y = torch.stack([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], -1)
        return y.flatten(-2).to(x.dtype)
    gpt_module.apply_rotary_emb = interleaved
    try:
        with torch.no_grad():
            wrong = model(ref["idx"])
    finally:
        gpt_module.apply_rotary_emb = orig
    assert (wrong - ref["logits"]).abs().max() > 1e-2


def test_grow_vocab_keeps_old_rows():
    model = small_gpt(vocab=320)  # 320 is a multiple of 64: growing by one adds a padded block
    wte, head = model.transformer.wte.weight.clone(), model.lm_head.weight.clone()
    idx = torch.randint(0, 320, (2, 10))
    with torch.no_grad():
        before = model(idx)
    model.grow_vocab(321)
    assert model.transformer.wte.weight.shape[0] == 384
    assert torch.equal(model.transformer.wte.weight[:320], wte[:320])
    assert torch.equal(model.lm_head.weight[:320], head[:320])
    with torch.no_grad():
        after = model(idx)
    assert after.shape[-1] == 321
    assert torch.equal(after[..., :320], before)


def test_gqa_fallback_matches_enable_gqa():
    model = small_gpt(n_head=4, n_kv_head=2)
    idx = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        native = model(idx)
        old = gpt_module.USE_ENABLE_GQA
        gpt_module.USE_ENABLE_GQA = not old
        try:
            fallback = model(idx)
        finally:
            gpt_module.USE_ENABLE_GQA = old
    torch.testing.assert_close(native, fallback, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch, cuts, cache_len", [
    (2, (0, 8, *range(9, 25)), 32),  # a prefill chunk, then one token at a time
    (1, (0, 7, 20), 20),  # a chunked prefill that fills the cache exactly
], ids=["prefill_then_tokens", "chunked_prefill"])
def test_kv_cache_matches_full_forward(batch, cuts, cache_len):
    model = small_gpt()
    idx = torch.randint(0, 300, (batch, cuts[-1]))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_kv_cache(batch, cache_len)
        parts = [model(idx[:, a:b], kv_cache=cache) for a, b in zip(cuts, cuts[1:])]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=0)


def test_inputs_embeds_equals_idx():
    model = small_gpt()
    idx = torch.randint(0, 300, (2, 16))
    targets = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        a = model(idx)
        b = model(inputs_embeds=model.transformer.wte(idx))
        la = model(idx, targets=targets)
        lb = model(inputs_embeds=model.transformer.wte(idx), targets=targets)
    assert torch.equal(a, b)
    assert torch.equal(la, lb)


def test_loss_reduction_sum_and_ignore_index():
    model = small_gpt()
    idx = torch.randint(0, 300, (2, 16))
    targets = torch.randint(0, 300, (2, 16))
    targets[0, :5] = -1
    with torch.no_grad():
        mean = model(idx, targets=targets)
        total = model(idx, targets=targets, loss_reduction="sum")
    n = (targets != -1).sum()
    torch.testing.assert_close(total / n, mean)


@pytest.mark.parametrize("use_cache", [False, True])
def test_left_padded_batch_matches_rows_alone(use_cache):
    model = small_gpt()
    torch.manual_seed(1)
    lengths = [5, 12, 9]
    rows = [torch.randint(0, 300, (L,)) for L in lengths]
    T = max(lengths)
    idx = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        idx[i, T - len(r):] = r
        mask[i, T - len(r):] = 1
    with torch.no_grad():
        if use_cache:
            cache = model.new_kv_cache(len(rows), T + 4)
            batch = model(idx, kv_cache=cache, attention_mask=mask)
            nxt = torch.randint(0, 300, (len(rows), 1))
            step = model(nxt, kv_cache=cache, attention_mask=torch.ones(len(rows), 1, dtype=torch.long))
        else:
            batch = model(idx, attention_mask=mask)
        for i, r in enumerate(rows):
            alone = model(r[None])
            torch.testing.assert_close(batch[i, T - len(r):], alone[0], atol=1e-4, rtol=0)
            if use_cache:
                alone_next = model(torch.cat([r, nxt[i]])[None])[0, -1]
                torch.testing.assert_close(step[i, 0], alone_next, atol=1e-4, rtol=0)


def test_meta_device_build_has_no_nan():
    model = small_gpt()
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
    assert model.cos.device.type == "cpu" and torch.isfinite(model.cos.float()).all()
