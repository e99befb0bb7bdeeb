import json
import os

import pytest
from conftest import FIXTURE_D2

from nanoocr.tokenizer import (
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerError,
    ocr_conversation,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 1234567890 times!",
    "Invoice #4521 — total: $1,299.99 (incl. VAT 20%). Due 2026-11-29.",
    "naïve café résumé — 東京 ✓ Ελληνικά текст",
    "def forward(self, x):\n    return x * 2  # double it\n",
] * 50


@pytest.fixture(scope="module")
def trained():
    return Tokenizer.train_from_iterator(iter(CORPUS), vocab_size=400)


def test_fixture_tokenizer_reproduces_nanochat():
    ref = json.load(open(os.path.join(FIXTURE_D2, "reference_tokenizer.json")))
    tok = Tokenizer.from_directory(os.path.join(FIXTURE_D2, "tokenizer"))
    for text, ids in ref["encodings"].items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text
    for name, i in ref["special_ids"].items():
        assert tok.encode_special(name) == i
    # <|image|> appended after the old vocabulary
    assert tok.image_id == ref["vocab_size"] and tok.get_vocab_size() == ref["vocab_size"] + 1


def test_train_round_trip(trained):
    assert trained.get_vocab_size() == 400
    samples = CORPUS[:4] + ["unseen words: zyxwvut QRSTU 0.000001 ∑∫√ 🙂 \t tabs\r\nCRLF", ""]
    for text in samples:
        assert trained.decode(trained.encode(text)) == text
    # BPE actually merged something: common text is shorter than its bytes
    assert len(trained.encode(CORPUS[0])) < len(CORPUS[0].encode()) * 0.7


def test_numbers_split_in_pairs(trained):
    ids = trained.encode("1234567")
    pieces = [trained.decode([i]) for i in ids]
    assert all(len(p) <= 2 for p in pieces), pieces


def test_special_tokens_are_single_ids(trained):
    ids = [trained.encode_special(t) for t in SPECIAL_TOKENS + [IMAGE_TOKEN]]
    assert len(set(ids)) == 10 and max(ids) == 399
    # special strings inside ordinary text are NOT special tokens
    assert trained.image_id not in trained.encode("<|image|>") and trained.bos_id not in trained.encode("<|bos|>")


def test_save_load_identical(trained, tmp_path):
    trained.save(str(tmp_path / "tok"))
    assert (tmp_path / "tok" / "token_bytes.pt").exists()
    again = Tokenizer.from_directory(str(tmp_path / "tok"))
    for text in CORPUS[:4]:
        assert again.encode(text) == trained.encode(text)
    assert again.image_id == trained.image_id and again.get_vocab_size() == trained.get_vocab_size()


def test_render_conversation_mask(trained):
    conv = ocr_conversation("Free OCR.", "Hello 42")
    ids, mask = trained.render_conversation(conv, num_image_tokens=7)
    assert ids[0] == trained.bos_id and ids[1] == trained.encode_special("<|user_start|>")
    assert ids[2:9] == [trained.image_id] * 7 and ids[9] != trained.image_id
    assert trained.decode(ids[9:ids.index(trained.encode_special("<|user_end|>"))]) == "\nFree OCR."
    trained_ids = [i for i, m in zip(ids, mask) if m]
    assert trained.decode(trained_ids[:-1]) == "Hello 42"
    assert trained_ids[-1] == trained.encode_special("<|assistant_end|>") == ids[-1]
    a_start = ids.index(trained.encode_special("<|assistant_start|>"))
    assert mask[a_start] == 0 and all(m == 0 for m in mask[:a_start]) and all(mask[a_start + 1:])
    # completion prompt = the same prefix up to and including <|assistant_start|>
    prompt = trained.render_for_completion(conv, num_image_tokens=7)
    assert prompt == ids[:a_start + 1]
    # a vision sample without a marker gets one; with num_image_tokens>0 two markers are an error
    with pytest.raises(ValueError, match="exactly one"):
        trained.render_conversation({"messages": [{"role": "user", "content": "<image><image>x"},
                                                  {"role": "assistant", "content": "y"}]}, num_image_tokens=3)


def test_missing_tokenizer_dir_is_clear(tmp_path):
    with pytest.raises(TokenizerError, match="tok_train"):
        Tokenizer.from_directory(str(tmp_path))
    (tmp_path / "tokenizer.pkl").write_bytes(b"not a pickle")
    with pytest.raises(TokenizerError, match="tokenizer.pkl"):
        Tokenizer.from_directory(str(tmp_path))
