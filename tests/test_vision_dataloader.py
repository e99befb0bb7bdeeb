"""The training batches: answer-only targets, placeholder runs, mixing ratio, DDP sharding,
resume, and bad samples skipped and counted."""

import pytest
import torch
from PIL import Image

from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig, num_image_tokens
from nanoocr.engine import preprocess
from nanoocr.image_process import load_image
from nanoocr.tokenizer import Tokenizer
from nanoocr.vision_dataloader import (
    SampleError,
    is_text_index,
    prepare_vision,
    records_source,
    vision_data_generator,
)
from tasks import image_folder
from tasks.sources import synth_source, synth_text_source

ENC = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
MODE = (32, 256)


@pytest.fixture(scope="module")
def tok():
    from nanoocr.synth_text import corpus_iter
    return Tokenizer.train_from_iterator(corpus_iter(max_chars=200_000), vocab_size=600)


def _sample(i):
    # picklable source for worker processes
    img = Image.new("RGB", (256, 32), (255, 255, 255))
    img.paste((0, 0, 0), (i % 200, 5, i % 200 + 20, 25))
    return {"image": img, "prompt": "Free OCR.", "answer": f"sample {i} " + "x" * (i % 7), "id": str(i)}


def test_targets_cover_exactly_answer_and_end(tok):
    gen = vision_data_generator(_sample, tok, ENC, batch_size=4, seq_len=128, mode=MODE)
    batch, _ = next(gen)
    n_img = num_image_tokens(ENC, MODE)
    end = tok.encode_special("<|assistant_end|>")
    for row in range(4):
        ids, tg = batch["input_ids"][row], batch["targets"][row]
        # the placeholder run has exactly the count function's length, right after <|user_start|>
        assert (ids == tok.image_id).sum() == n_img and bool((ids[2:2 + n_img] == tok.image_id).all())
        answer_ids = tok.encode(_sample(row)["answer"]) + [end]
        got = tg[tg != -1].tolist()
        assert got == answer_ids  # exactly the answer and <|assistant_end|>, nothing else
        first = (tg != -1).nonzero()[0].item()
        assert ids[first].item() == tok.encode_special("<|assistant_start|>")
    assert batch["n_answer_tokens"] == int((batch["targets"] != -1).sum())
    assert batch["images"].shape == (4, 3, 32, 256)


def test_training_and_reading_prepare_an_image_alike(tok):
    """prepare_vision (training) and engine.preprocess (read, eval, serve) give the model the same
    tensors for the same image, at a strip size, a square mode and Gundam's tiles."""
    class Model:  # preprocess only reads the encoder's config
        class encoder:
            config = ENC
    page = Image.new("RGB", (700, 300), (250, 248, 240))
    page.paste((20, 20, 20), (40, 40, 600, 60))
    for image, mode in ((_sample(3)["image"], MODE), (page, "base"), (page, "gundam")):
        trained = prepare_vision({"image": image, "answer": "x"}, tok, ENC, mode)["image"]
        read = preprocess(Model, load_image(image), mode)
        assert trained.keys() == read.keys(), mode
        for k, v in trained.items():
            assert torch.equal(v, read[k]) if isinstance(v, torch.Tensor) else v == read[k], (mode, k)
        assert (mode != "gundam") or trained["tiles"] is not None  # the tiles were compared too


def test_mixing_ratio(tok):
    n_text = sum(is_text_index(3, i, 0.1) for i in range(2000))
    assert abs(n_text / 2000 - 0.1) <= 0.03
    gen = vision_data_generator(_sample, tok, ENC, batch_size=50, seq_len=512, mode=MODE, text_ratio=0.3,
                                get_text=synth_text_source("train", 0), seed=3)
    rows = []
    for _ in range(4):
        b, _ = next(gen)
        rows += b["is_text"]
        # text rows: no placeholders; every target after bos counts
        for r, is_text in enumerate(b["is_text"]):
            assert ((b["input_ids"][r] == tok.image_id).any().item()) != is_text
    assert abs(sum(rows) / len(rows) - 0.3) <= 0.07  # 200 rows: a looser bound than the 2000-index check


def test_ddp_shards_disjoint_and_complete(tok):
    seen = []
    for rank in range(3):
        gen = vision_data_generator(_sample, tok, ENC, batch_size=4, seq_len=128, mode=MODE, rank=rank, world_size=3)
        for _ in range(2):
            b, _ = next(gen)
            seen += [int(n) for n in b["names"]]
    assert sorted(seen) == list(range(24))


def test_resume_continues_identical_stream(tok):
    src = synth_source("train", "line", seed=0, mode=MODE)
    gen = vision_data_generator(src, tok, ENC, batch_size=3, seq_len=128, mode=MODE)
    batches = [next(gen) for _ in range(4)]
    state = batches[1][1]
    again = vision_data_generator(src, tok, ENC, batch_size=3, seq_len=128, mode=MODE, state=state)
    for expected, _ in batches[2:]:
        got, _ = next(again)
        assert torch.equal(got["input_ids"], expected["input_ids"])
        assert torch.equal(got["images"], expected["images"])


def test_workers_give_the_same_batches(tok):
    inline = vision_data_generator(_sample, tok, ENC, batch_size=4, seq_len=128, mode=MODE)
    pooled = vision_data_generator(_sample, tok, ENC, batch_size=4, seq_len=128, mode=MODE, num_workers=2)
    for _ in range(3):
        a, sa = next(inline)
        b, sb = next(pooled)
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["images"], b["images"])
        assert sa == sb
    pooled.close()


def test_corrupt_image_skipped_and_counted(tok, tmp_path, capsys):
    for i in range(3):
        Image.new("RGB", (100, 20), "white").save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"text {i}")
    (tmp_path / "1.png").write_bytes(b"%PDF-1.4 not really an image")
    records = list(image_folder.read(str(tmp_path)))
    logs = []
    gen = vision_data_generator(records_source(records, shuffle=False), tok, ENC, batch_size=2, seq_len=128,
                                mode=MODE, log=logs.append)
    batch, state = next(gen)
    assert state["skipped"] == 1 and state["consumed"] == 3
    assert any("1.png" in m and "PDF" in m for m in logs)
    assert sorted(batch["names"]) == sorted([str(tmp_path / "0.png"), str(tmp_path / "2.png")])
    strict = vision_data_generator(records_source(records, shuffle=False), tok, ENC, batch_size=2, seq_len=128,
                                   mode=MODE, strict=True)
    with pytest.raises(SampleError, match="1.png"):
        next(strict)


def test_overlong_sample_truncated_with_aligned_mask(tok):
    def long_sample(i):
        s = _sample(i)
        return dict(s, answer="word " * 200)
    logs = []
    gen = vision_data_generator(long_sample, tok, ENC, batch_size=2, seq_len=80, mode=MODE, log=logs.append)
    batch, state = next(gen)
    assert state["truncated"] == 2 and batch["input_ids"].shape[1] == 80
    assert any("truncating" in m for m in logs)
    # targets are still the next input token wherever they are set (mask aligned with ids)
    ids, tg = batch["input_ids"][0], batch["targets"][0]
    set_ = (tg[:-1] != -1).nonzero().flatten()
    assert torch.equal(tg[set_], ids[set_ + 1])
    assert (ids == tok.image_id).sum() == num_image_tokens(ENC, MODE)


def test_empty_answer_is_a_skip(tok):
    with pytest.raises(SampleError, match="empty answer"):
        prepare_vision(dict(_sample(0), answer="  "), tok, ENC, MODE)


@pytest.mark.parametrize("mode", ["tiny", "base", "gundam", (32, 256)])
def test_placeholder_runs_equal_count_function_per_mode(tok, mode):
    sizes = [(300, 200), (700, 300), (90, 120), (400, 1000)]

    def sample(i):
        w, h = sizes[i % len(sizes)]
        return {"image": Image.new("RGB", (w, h), "white"), "prompt": "Free OCR.", "answer": "ok", "id": str(i)}
    gen = vision_data_generator(sample, tok, ENC, batch_size=4, seq_len=2048, mode=mode)
    batch, _ = next(gen)
    for row, (w, h) in enumerate(sizes):
        assert int((batch["input_ids"][row] == tok.image_id).sum()) == num_image_tokens(ENC, mode, w, h)
        assert batch["n_image_tokens"][row] == num_image_tokens(ENC, mode, w, h)
