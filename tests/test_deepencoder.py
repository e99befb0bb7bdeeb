"""
The whole DeepEncoder vs transformers' UnlimitedOcrVisionModel (a DeepEncoder: SAM + two stride-2
convs + CLIP, interpolating to any grid) and UnlimitedOcrModel.get_image_features (the newline /
separator / Gundam tile layout), plus the placeholder counts and the full encoder's size.

References are re-randomised (dev/design.md §7, the trap), float64, compared relatively, with
negative controls. The tiny config follows dev/design.md §7's checked facts, except window 3 (not 4)
so the window blocks also zero-pad: the native 128 px grid is 8 x 8.
"""

import pytest
import torch
from PIL import Image
from reference import (
    UNLIMITED_CLIP_KW,
    UNLIMITED_SAM_KW,
    UNLIMITED_TEXT_KW,
    randomize_,
    rel_err,
)

from nanoocr.deepencoder import (
    ENCODER_SIZES,
    DeepEncoder,
    DeepEncoderConfig,
    count_vision_tokens,
    grid_size,
    num_image_tokens,
)
from nanoocr.encoder_weights import load_encoder_weights
from nanoocr.image_process import process_for_encoder

TOL = 1e-4

OURS = DeepEncoderConfig(image_size=128, patch_size=16, sam_width=64, sam_depth=2, sam_heads=2, sam_mlp=128,
                         window_size=3, global_attn_indexes=(1,), neck_channels=32, conv_channels=(64, 128),
                         clip_width=128, clip_depth=2, clip_heads=2, clip_mlp=256, clip_patch=0, out_dim=128)


def pixels(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """One tiny UnlimitedOcrModel (eager attention, float64); its vision tower is an
    UnlimitedOcrVisionModel, saved on its own (sam_encoder.*, vision_encoder.*) and as the whole model."""
    from safetensors.torch import save_file
    from transformers import UnlimitedOcrConfig, UnlimitedOcrModel
    cfg = UnlimitedOcrConfig(vision_config=dict(sam_config=UNLIMITED_SAM_KW, encoder_config=UNLIMITED_CLIP_KW), text_config=UNLIMITED_TEXT_KW)
    model = UnlimitedOcrModel._from_config(cfg, attn_implementation="eager").eval()
    randomize_(model, seed=11)
    model = model.double()
    tmp = tmp_path_factory.mktemp("uocr")
    save_file({k: v.contiguous() for k, v in model.vision_tower.state_dict().items()}, str(tmp / "vision.safetensors"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    return dict(model=model, vision=tmp / "vision.safetensors", full=tmp / "model.safetensors")


def ours_from(path):
    enc = DeepEncoder(OURS).double().eval()
    load_encoder_weights(enc, path, verbose=False)
    return enc


def concat_features(enc, x):
    """What UnlimitedOcrVisionModel returns: cat(CLIP tokens without CLS, compressed SAM tokens)."""
    f = enc.encode_features(x)
    return torch.cat([f["clip"], f["compressed"].flatten(2).transpose(1, 2)], dim=-1)


# native 128 px, 2x, non-square, and a non-square size whose grid needs the ceil of odd sides
SIZES = [(128, 128), (256, 256), (128, 256), (160, 224)]


@pytest.mark.parametrize("size", SIZES)
def test_encoder_matches_unlimited_ocr_vision_model(ref, size):
    H, W = size
    x = pixels(2, 3, H, W, seed=H + W)
    with torch.no_grad():
        expected = ref["model"].vision_tower(x).last_hidden_state
        other = ref["model"].vision_tower(pixels(2, 3, H, W, seed=99)).last_hidden_state
        got = concat_features(ours_from(ref["vision"]), x)
    qh, qw = grid_size(OURS, H, W)
    assert expected.shape == got.shape == (2, qh * qw, 256)
    # the trap: both halves (CLIP, SAM) must be far from constant and depend on the input
    for half in (slice(0, 128), slice(128, 256)):
        assert expected[..., half].std() > 0.3 and rel_err(other[..., half], expected[..., half]) > 0.3
    err = rel_err(got, expected)
    assert err < TOL, f"{H}x{W}: encoder differs from UnlimitedOcrVisionModel by {err:.2e} relative"


@pytest.mark.parametrize("name,index", [("sam.downsample.1.weight", (5, 7, 1, 1)),   # net_3
                                        ("clip.position_embedding", (3, 10)),       # resampled off-native
                                        ("sam.blocks.1.attn.rel_pos_w", (10, 4))])  # global block, resampled
def test_perturbed_weight_breaks_the_match(ref, name, index):
    x = pixels(1, 3, 160, 224, seed=3)
    enc = ours_from(ref["vision"])
    with torch.no_grad():
        expected = ref["model"].vision_tower(x).last_hidden_state
        enc.state_dict()[name][index] += 0.1
        err = rel_err(concat_features(enc, x), expected)
    assert err > 10 * TOL, f"perturbing {name} changed the output only {err:.2e}"


@pytest.mark.parametrize("grid", [None, (2, 2), (3, 2)])
def test_layout_matches_get_image_features(ref, grid):
    enc = ours_from(ref["full"])
    global_view = pixels(1, 3, 128, 128, seed=4)
    with torch.no_grad():
        if grid is None:
            expected = ref["model"].get_image_features(global_view).pooler_output[0]
            got = enc.embed_image(global_view[0])
        else:
            wc, hc = grid
            tiles = pixels(wc * hc, 3, 80, 80, seed=5)  # 80 px: a 5x5 patch grid -> 2x2 tokens per tile
            expected = ref["model"].get_image_features(global_view, pixel_values_local=tiles,
                                                       num_local_patches=[wc * hc], patches_grid=[[wc, hc]]).pooler_output[0]
            got = enc.embed_image(global_view, tiles, grid)
    assert got.shape == expected.shape
    assert expected.std() > 0.3
    err = rel_err(got, expected)
    assert err < TOL, f"layout {grid}: {err:.2e} relative"
    # and the layout itself is not vacuous: newlines / separator sit where dev/design.md §2 says
    q = 2
    assert got[-1].equal(enc.view_separator.detach()) and got[-2].equal(enc.image_newline.detach())
    if grid is not None:
        wc, hc = grid
        assert got[q * wc].equal(enc.image_newline.detach())  # end of the first mosaic row
        assert got.shape[0] == (q * hc) * (q * wc + 1) + q * (q + 1) + 1


def test_embed_batch_equals_embed_image(ref):
    enc = ours_from(ref["full"])
    x = pixels(3, 3, 128, 128, seed=8)
    with torch.no_grad():
        batch = enc.embed_batch(x)
        for i in range(3):
            assert torch.allclose(batch[i], enc.embed_image(x[i]), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# placeholder counts

FULL = DeepEncoderConfig(**ENCODER_SIZES["full"])
CPU = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
MODE_COUNTS = {"tiny": 73, "small": 111, "base": 273, "large": 421}
GUNDAM_COUNTS = {(2, 2): 693, (3, 2): 893, (2, 3): 903, (3, 3): 1203}  # dev/design.md §2 worked numbers


def test_full_size_counts_match_design():
    for mode, n in MODE_COUNTS.items():
        assert num_image_tokens(FULL, mode) == n, mode
    for (wc, hc), n in GUNDAM_COUNTS.items():
        assert num_image_tokens(FULL, "gundam", width=640 * wc, height=640 * hc) == n, (wc, hc)
        assert num_image_tokens(FULL, "gundam", grid=(wc, hc)) == n
    assert num_image_tokens(FULL, "gundam", width=600, height=500) == 273  # fits one tile: no tiles
    assert grid_size(FULL, 1024, 1024) == (16, 16) and grid_size(FULL, 640, 640) == (10, 10)
    assert grid_size(FULL, 1008, 976) == (16, 16)  # 63 and 61 patches: the convs take ceil of odd sides
    assert grid_size(FULL, 80, 48) == (2, 1) and grid_size(CPU, 32, 256) == (2, 16)
    assert num_image_tokens(FULL, "gundam", width=2000, height=1000) == 272 + 20 * 41 + 1  # picks (4, 2)
    assert num_image_tokens(CPU, (32, 256)) == 2 * 17 + 1  # a fixed-size one-line strip


def test_counts_equal_returned_embeddings():
    """Through the real preprocessing (image_process) at the CPU size's geometry -- whose Base side
    256 keeps the full size's counts -- the number of embeddings embed_image returns is the count.
    (Widths shrunk to keep this fast: counts depend only on patch, sides and convs.)"""
    cfg = DeepEncoderConfig(**{**ENCODER_SIZES["cpu"], "sam_width": 16, "sam_heads": 1, "sam_mlp": 16,
                               "neck_channels": 16, "conv_channels": (16,), "clip_width": 16, "clip_depth": 1,
                               "clip_heads": 1, "clip_mlp": 16, "out_dim": 8})
    assert cfg.stride == CPU.stride and cfg.image_size == CPU.image_size
    enc = DeepEncoder(cfg).eval()
    cases = [(mode, 300, 200, None) for mode in MODE_COUNTS]
    cases += [("gundam", 160 * wc, 160 * hc, (wc, hc)) for wc, hc in GUNDAM_COUNTS]  # CPU tiles are 160 px
    cases += [((32, 256), 300, 40, None), ((48, 320), 500, 60, None)]  # fixed-size strips
    for mode, w, h, grid in cases:
        img = Image.new("RGB", (w, h), (200, 30, 90))
        out = process_for_encoder(img, mode, cfg)
        assert out["grid"] == grid, (mode, w, h, out["grid"])
        with torch.no_grad():
            emb = enc.embed_image(out["global_view"], out["tiles"], out["grid"])
        n = num_image_tokens(cfg, mode, width=w, height=h)
        if isinstance(mode, tuple):
            qh, qw = grid_size(cfg, *mode)
            expected = qh * (qw + 1) + 1
        else:
            expected = MODE_COUNTS[mode] if grid is None else GUNDAM_COUNTS[grid]
        assert emb.shape == (n, cfg.out_dim) and n == expected, (mode, grid, emb.shape, n)


# ---------------------------------------------------------------------------------------------
# construction

def test_full_size_parameter_counts_on_meta():
    with torch.device("meta"):
        enc = DeepEncoder(FULL)
    n = enc.num_params()
    assert abs(n["sam"] + n["compressor"] - 95.6e6) < 1e6, n
    assert abs(n["clip"] - 303.2e6) < 1e6, n
    assert abs(n["projector"] - 2.6e6) < 0.1e6 and n["projector"] == 2048 * 1280 + 1280, n
    assert not enc.clip.patch_embedding.weight.requires_grad


def test_meta_build_then_init_and_train_step():
    """nanochat's flow: build on meta, to_empty, init_weights; then every trainable parameter gets a
    gradient (DDP needs no unused parameters) and the frozen CLIP patch conv stays frozen."""
    cfg = DeepEncoderConfig(**{**ENCODER_SIZES["cpu"], "clip_patch": 8})
    with torch.device("meta"):
        enc = DeepEncoder(cfg)
    enc.to_empty(device="cpu")
    enc.init_weights()
    assert all(torch.isfinite(p).all() for p in enc.parameters())
    x = torch.randn(2, 3, 32, 256)
    tokens = enc(x)
    assert tokens.shape == (2, 2 * 16, cfg.out_dim) and tokens.std() > 0.1
    (tokens.square().mean() + enc.embed_image(x[0]).sum()).backward()
    for name, p in enc.named_parameters():
        if name == "clip.patch_embedding.weight":
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    feats = enc.encode_features(x)
    assert feats["neck"].shape == (2, 64, 4, 32) and feats["compressed"].shape == (2, 128, 2, 16)
    assert feats["grid"] == (2, 16)


def test_config_rejects_mismatched_clip_width():
    with pytest.raises(AssertionError, match="clip_width"):
        DeepEncoderConfig(**{**ENCODER_SIZES["cpu"], "clip_width": 96})
    cfg = DeepEncoderConfig(**{**ENCODER_SIZES["cpu"], "conv_channels": [], "clip_width": 64})  # no convs
    assert grid_size(cfg, 32, 256) == (4, 32) and cfg.conv_channels == ()
    assert DeepEncoder(cfg)(torch.randn(1, 3, 32, 256)).shape == (1, 128, cfg.out_dim)


def test_count_vision_tokens():
    # vision tokens as DeepSeek-OCR counts them: grid only, valid part of a padded view
    cfg = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    im = Image.new("RGB", (512, 256), "white")
    base = process_for_encoder(im, "base", cfg)
    assert count_vision_tokens(cfg, base) == int(16 * 16 * 0.5)
    strip = process_for_encoder(im, (32, 256), cfg)
    assert count_vision_tokens(cfg, strip) == 2 * 16
