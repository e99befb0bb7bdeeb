"""
SAM image encoder vs transformers' SamVisionModel (an implementation nobody here wrote).

dev/design.md §7, the trap: a freshly built SAM reference outputs ~0 (initializer_range 1e-10, zero
pos-embed / rel-pos), so every parameter is re-randomised before saving, the reference output's
spread is asserted to be far above the tolerance, comparisons are relative, and perturbing single
loaded weights must break the match.
"""

import pytest
import torch
from reference import randomize_, rel_err

from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig
from nanoocr.encoder_weights import load_encoder_weights
from nanoocr.sam import (
    rel_pos_table,
    resize_pos_embed,
    window_partition,
    window_unpartition,
)

TOL = 1e-4  # max |ours - ref| / std(ref)


# grid 80/8 = 10 with window 3: the window blocks zero-pad 10 -> 12; block 1 is global
SAM_KW = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, window_size=3, global_attn_indexes=[1],
              image_size=80, patch_size=8, output_channels=32, mlp_dim=128)
OURS = DeepEncoderConfig(image_size=80, patch_size=8, sam_width=64, sam_depth=3, sam_heads=2, sam_mlp=128,
                         window_size=3, global_attn_indexes=(1,), neck_channels=32, conv_channels=(48,),
                         clip_width=48, clip_depth=1, clip_heads=2, clip_mlp=64, clip_patch=0, out_dim=16)


@pytest.fixture(scope="module")
def sam_ref(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import SamVisionConfig, SamVisionModel
    torch.manual_seed(0)
    ref = SamVisionModel._from_config(SamVisionConfig(**SAM_KW), attn_implementation="eager").eval()
    randomize_(ref, seed=1)
    path = tmp_path_factory.mktemp("sam") / "sam_vision.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    x = torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = ref(x).last_hidden_state
        out2 = ref(torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(3))).last_hidden_state
    return dict(path=path, x=x, out=out, out2=out2)


def loaded_encoder(path):
    enc = DeepEncoder(OURS).eval()
    report = load_encoder_weights(enc, path, verbose=False)
    return enc, report


def test_reference_is_not_degenerate(sam_ref):
    out, out2 = sam_ref["out"], sam_ref["out2"]
    assert out.shape == (2, 32, 10, 10)
    assert out.std() > 0.3, f"reference output std {out.std():.2e}: re-randomisation failed"
    assert rel_err(out2, out) > 0.3, "reference output does not depend on its input"


def test_neck_matches_sam_vision_model(sam_ref):
    enc, report = loaded_encoder(sam_ref["path"])
    assert report["layouts"] == {str(sam_ref["path"]): "sam"}
    # the compressor is not in any SAM checkpoint: left fresh and reported, not an error
    assert set(report["fresh"]) == {"compressor", "clip", "projector", "layout"}
    with torch.no_grad():
        neck = enc.encode_features(sam_ref["x"])["neck"]
    assert neck.shape == sam_ref["out"].shape
    err = rel_err(neck, sam_ref["out"])
    assert err < TOL, f"neck differs from SamVisionModel: {err:.2e} relative"


@pytest.mark.parametrize("name,index,delta", [
    ("sam.blocks.1.attn.rel_pos_h", (3, 0), 0.05),   # global block's relative position table
    ("sam.blocks.0.attn.rel_pos_w", (1, 5), 0.05),   # window block's
    ("sam.pos_embed", (0, 4, 7, 3), 0.05),
    ("sam.blocks.2.attn.qkv.weight", (70, 11), 0.1),  # a key projection weight
    ("sam.neck.norm2.bias", (5,), 0.01),
])
def test_perturbed_weight_breaks_the_match(sam_ref, name, index, delta):
    """Negative control: the comparison is sensitive to every kind of weight the trap hides."""
    enc, _ = loaded_encoder(sam_ref["path"])
    with torch.no_grad():
        enc.state_dict()[name][index] += delta
        neck = enc.encode_features(sam_ref["x"])["neck"]
    err = rel_err(neck, sam_ref["out"])
    assert err > 10 * TOL, f"perturbing {name}{index} by {delta} changed the output only {err:.2e}"


def test_window_partition_roundtrip_with_padding():
    x = torch.randn(2, 10, 7, 5)
    windows, padded = window_partition(x, 3)
    assert padded == (12, 9) and windows.shape == (2 * 4 * 3, 3, 3, 5)
    assert windows[3].equal(x[0, 3:6, 0:3])  # row-major windows: window 3 of image 0 = rows 3..5, cols 0..2
    assert windows[11, 1:, 2:].abs().sum() == 0  # the bottom-right window is mostly zero padding
    assert window_unpartition(windows, 3, padded, (10, 7)).equal(x)


def test_position_resampling():
    pos = torch.randn(1, 8, 8, 4)
    assert resize_pos_embed(pos, 8, 8) is pos  # native grid untouched
    assert resize_pos_embed(pos, 4, 16).shape == (1, 4, 16, 4)
    table = torch.randn(2 * 5 - 1, 3)
    r = rel_pos_table(5, table)
    assert r.shape == (5, 5, 3) and r[4, 0].equal(table[8]) and r[0, 4].equal(table[0]) and r[2, 2].equal(table[4])
    assert rel_pos_table(7, table).shape == (7, 7, 3)  # resampled linearly to 13 offsets
