"""The VLM: placeholders and embeddings agree for every mode, mismatches are errors, and a
text-only batch is exactly the GPT."""
import pytest
import torch
from PIL import Image

from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig, num_image_tokens
from nanoocr.gpt import GPTConfig
from nanoocr.image_process import process_for_encoder
from nanoocr.model import build_vlm

ENC = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
VOCAB = 300
IMAGE_ID = VOCAB - 1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    gpt = GPTConfig(sequence_len=256, vocab_size=VOCAB, n_layer=2, n_head=2, n_kv_head=1, n_embd=ENC.out_dim)
    return build_vlm(ENC, gpt, IMAGE_ID, proj_std=0.05).eval()


def page(w, h):
    im = Image.new("RGB", (w, h), "white")
    im.paste((0, 0, 0), (w // 4, h // 4, w // 2, h // 2))
    return im


@pytest.mark.parametrize("mode,size", [("tiny", (300, 200)), ("small", (300, 200)), ("base", (300, 200)),
                                       ("large", (200, 300)), ("gundam", (100, 90)), ("gundam", (400, 200)),
                                       ("gundam", (330, 330)), ("gundam", (330, 500)), ("gundam", (500, 500)),
                                       ((32, 256), (700, 40))])
def test_embeddings_equal_count_function(model, mode, size):
    proc = process_for_encoder(page(*size), mode, ENC)
    n = num_image_tokens(ENC, mode, *size)
    with torch.no_grad():
        emb = model.encode_images([proc])[0]
    assert emb.shape == (n, ENC.out_dim)
    if proc["tiles"] is not None:
        wc, hc = proc["grid"]
        assert proc["tiles"].shape[0] == wc * hc


def test_batched_views_equal_one_by_one(model):
    procs = [process_for_encoder(page(300 + 40 * i, 200), "base", ENC) for i in range(3)]
    with torch.no_grad():
        batched = model.encode_images(torch.stack([p["global_view"] for p in procs]))
        single = model.encode_images(procs)
    for i in range(3):
        torch.testing.assert_close(batched[i], single[i], atol=1e-5, rtol=1e-5)


def test_forward_places_embeddings_and_rejects_mismatch(model):
    pix = torch.randn(2, 3, 32, 256)
    n = num_image_tokens(ENC, (32, 256))
    ids = torch.randint(0, VOCAB - 10, (1, n + 6)).repeat(2, 1)  # same text, different images
    ids[:, 2:2 + n] = IMAGE_ID
    with torch.no_grad():
        logits = model(ids, images=pix)
        other = model(ids, images=pix.flip(0))  # swap the images: rows' outputs must swap
    assert logits.shape == (2, n + 6, VOCAB)
    torch.testing.assert_close(logits[0], other[1], atol=1e-5, rtol=1e-5)
    assert (logits[0] - other[0]).abs().max() > 1e-3  # the image changes the output
    bad = ids.clone()
    bad[0, 1] = IMAGE_ID  # one placeholder too many
    with pytest.raises(ValueError, match=rf"{2 * n + 1} <\|image\|> placeholder tokens but the images produced {2 * n}"):
        model(bad, images=pix)
    with pytest.raises(ValueError, match="no images were given"):
        model(ids)


def test_text_only_batch_is_the_gpt(model):
    ids = torch.randint(0, VOCAB - 10, (2, 12))
    targets = torch.randint(0, VOCAB - 10, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(ids), model.gpt(ids))
        assert torch.equal(model(ids, targets=targets), model.gpt(ids, targets=targets))
