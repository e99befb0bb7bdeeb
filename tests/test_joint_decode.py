"""The CTC head as part of the model and the maths of reading with it (nanoocr/ctc.py PrefixScorer,
greedy_decode; nanoocr/joint_decode.py): prefix and full-text probabilities equal brute-force sums
over every frame path; the head survives save, load and export; a checkpoint that kept the head
beside its optimiser state still loads it; joint decoding runs batched and picks the empty answer
when the CTC head sees no text."""
import itertools
import math

import pytest
import torch

from nanoocr.ctc import NUM_CLASSES, PrefixScorer, char_ids, greedy_decode

A, B_ = char_ids("ab")


def _three_class_log_probs(T, seed):
    """[T, 1, NUM_CLASSES] log-probs where only blank, 'a' and 'b' have mass: 3**T paths to enumerate."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.full((T, 1, NUM_CLASSES), -math.inf)
    lp[:, 0, [0, A, B_]] = torch.randn(T, 3, generator=g).log_softmax(-1)
    return lp


def _collapse(path):
    out, prev = [], 0
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return out


def _brute(lp, prefix, exact):
    """Sum over all frame paths whose collapsed text starts with (or, exact, equals) prefix."""
    T = lp.size(0)
    total = 0.0
    for path in itertools.product([0, A, B_], repeat=T):
        out = _collapse(path)
        if (out == prefix) if exact else (out[:len(prefix)] == prefix):
            total += math.exp(sum(float(lp[t, 0, c]) for t, c in enumerate(path)))
    return total


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_and_full_scores_equal_brute_force_sums_over_alignments(seed):
    lp = _three_class_log_probs(T=6, seed=seed)
    scorer = PrefixScorer(lp)
    for text in ["a", "b", "ab", "aa", "aba", "abb", "bab"]:
        ids = char_ids(text)
        state = scorer.extend_text(scorer.empty([0]), [text])
        assert math.isclose(math.exp(float(state["prefix"][0])), _brute(lp, ids, exact=False), rel_tol=1e-4), text
        assert math.isclose(math.exp(float(scorer.full(state)[0])), _brute(lp, ids, exact=True), rel_tol=1e-4), text
    # the empty text: every frame blank
    assert math.isclose(math.exp(float(scorer.full(scorer.empty([0]))[0])), _brute(lp, [], exact=True), rel_tol=1e-4)


def test_extension_one_character_at_a_time_equals_a_batch_of_mixed_lengths():
    lp = torch.cat([_three_class_log_probs(5, 3), _three_class_log_probs(5, 4)], dim=1)  # two strips
    scorer = PrefixScorer(lp)
    batch = scorer.extend_text(scorer.empty([0, 1, 1]), ["ab", "", "bba"])
    for row, (strip, text) in enumerate([(0, "ab"), (1, ""), (1, "bba")]):
        state = scorer.empty([strip])
        for ch in text:
            state = scorer.extend(state, char_ids(ch))
        assert torch.allclose(batch["rb"][row], state["rb"][0]) and torch.allclose(batch["rn"][row], state["rn"][0])


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = [A, A, 0, A, B_, B_, 0]  # -> "aab"
    lp = torch.full((len(path), 1, NUM_CLASSES), -10.0)
    for t, c in enumerate(path):
        lp[t, 0, c] = 0.0
    assert greedy_decode(lp) == ["aab"]


def _tiny_model(ctc=True):
    from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
    from nanoocr.gpt import GPTConfig
    from nanoocr.model import build_vlm
    from nanoocr.tokenizer import Tokenizer
    tok = Tokenizer.train_from_iterator(iter(["hello world Free OCR. total cash 0123456789"] * 50), 300)
    torch.manual_seed(0)
    enc = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    gpt = GPTConfig(sequence_len=96, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=4, n_kv_head=4, n_embd=enc.out_dim)
    model = build_vlm(enc, gpt, tok.image_id, proj_std=0.05, ctc={"features": "tokens"} if ctc else None)
    return model.eval(), tok


def test_the_head_is_saved_loaded_and_exported_with_the_model(tmp_path):
    from nanoocr.checkpoint_manager import (
        load_model,
        save_checkpoint,
        save_export,
        save_tokenizer_once,
    )
    model, tok = _tiny_model()
    assert any(k.startswith("ctc_head.") for k in model.state_dict())
    meta = {"model_config": model.config, "user_config": {"mode": [32, 128]}, "step": 1}
    ckpt = tmp_path / "ckpt"
    save_checkpoint(str(ckpt), 1, model.state_dict(), None, meta)
    save_tokenizer_once(str(ckpt), tok)
    loaded, _, meta2 = load_model(str(ckpt))
    assert meta2["model_config"]["ctc"] == {"features": "tokens", "decoder": "joint"}
    assert torch.equal(loaded.ctc_head.proj.weight, model.ctc_head.proj.weight)
    save_export(str(tmp_path / "export"), loaded, tok, meta2)
    exported, _, _ = load_model(str(tmp_path / "export"))
    assert torch.equal(exported.ctc_head.proj.weight, model.ctc_head.proj.weight)
    # the decoder a recipe chose for its model travels with it and is read's default
    from nanoocr.joint_decode import default_decoder
    model.ctc_decoder = "gpt"
    save_export(str(tmp_path / "export_gpt"), model, tok, dict(meta, model_config=model.config))
    again, _, _ = load_model(str(tmp_path / "export_gpt"))
    assert again.ctc_decoder == "gpt" and default_decoder(again, (32, 128)) == "gpt"
    assert default_decoder(exported, (32, 128)) == "joint" and default_decoder(exported, "base") == "gpt"
    # a model without a head has none, and its config says nothing about one
    plain, _ = _tiny_model(ctc=False)
    assert plain.ctc_head is None and "ctc" not in plain.config


def test_a_checkpoint_that_kept_the_head_beside_the_optimiser_still_loads_it(tmp_path):
    """Before the head was part of the model, the trainer stored it in optim_*.pt["ctc_head"]."""
    from nanoocr.checkpoint_manager import (
        load_model,
        save_checkpoint,
        save_tokenizer_once,
    )
    model, tok = _tiny_model()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ctc_head.")}
    config = {k: v for k, v in model.config.items() if k != "ctc"}
    meta = {"model_config": config, "user_config": {"mode": [32, 128], "ctc_weight": 1.0, "ctc_features": "tokens"}, "step": 2}
    save_checkpoint(str(tmp_path), 2, state, {"ctc_head": model.ctc_head.state_dict(), "loader": {"index": 3}}, meta)
    save_tokenizer_once(str(tmp_path), tok)
    loaded, _, meta2 = load_model(str(tmp_path))
    assert loaded.ctc_head is not None and meta2["model_config"]["ctc"] == {"features": "tokens"}
    assert loaded.ctc_decoder == "joint"  # a model from before the choice was recorded reads joint
    assert torch.equal(loaded.ctc_head.proj.weight, model.ctc_head.proj.weight)


def _strips(n):
    from PIL import Image, ImageDraw
    out = []
    for i in range(n):
        im = Image.new("RGB", (128, 32), "white")
        ImageDraw.Draw(im).text((4, 8), ["hello", "total", "cash 12"][i % 3], fill="black")
        out.append(im)
    return out


def test_joint_decoding_is_batched_and_the_decoders_are_checked():
    from nanoocr.engine import preprocess
    from nanoocr.joint_decode import (
        check_decoder,
        ctc_generate,
        default_decoder,
        joint_generate,
    )
    model, tok = _tiny_model()
    views = [preprocess(model, im, (32, 128)) for im in _strips(3)]
    one_by_one = [joint_generate(model, tok, [v], "Free OCR.", max_tokens=8, beam=3)[0] for v in views]
    batched = joint_generate(model, tok, views, "Free OCR.", max_tokens=8, beam=3)
    assert [o["text"] for o in batched] == [o["text"] for o in one_by_one]
    for o in batched:
        assert 0.0 < o["confidence"] <= 1.0 and o["num_tokens"] == len(o["ids"]) <= 8
    assert len(ctc_generate(model, tok, views)) == 3
    assert default_decoder(model, (32, 128)) == "joint" and default_decoder(model, "base") == "gpt"
    plain, _ = _tiny_model(ctc=False)
    assert default_decoder(plain, (32, 128)) == "gpt"
    with pytest.raises(ValueError, match="no CTC head|has none"):
        check_decoder(plain, (32, 128), "joint")
    with pytest.raises(ValueError, match="one of"):
        check_decoder(model, (32, 128), "beam")


def test_joint_decoding_reads_empty_when_the_ctc_head_sees_only_blanks():
    """A head that puts every frame on blank makes any non-empty text impossible: the empty answer wins
    whatever the GPT would write."""
    from nanoocr.engine import generate, preprocess
    from nanoocr.joint_decode import joint_generate
    model, tok = _tiny_model()
    with torch.no_grad():
        model.ctc_head.proj.weight.zero_()
        bias = torch.full((model.ctc_head.frames_per_column, NUM_CLASSES), -30.0)
        bias[:, 0] = 0.0  # blank
        model.ctc_head.proj.bias.copy_(bias.flatten())
    views = [preprocess(model, im, (32, 128)) for im in _strips(2)]
    assert any(o["text"] for o in generate(model, tok, views, "Free OCR.", max_tokens=8))  # the GPT writes something
    assert [o["text"] for o in joint_generate(model, tok, views, "Free OCR.", max_tokens=8)] == ["", ""]
