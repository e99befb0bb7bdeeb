"""
CLIP vision transformer vs transformers' CLIP (CLIPModel's vision tower / CLIPVisionModel).

Our CLIP never sees pixels: it is fed a feature map as its patch sequence. So the reference runs
on pixels, a forward hook captures the patch embeddings it computes internally, and ours is fed
exactly those. Its last_hidden_state is taken before post_layernorm, like ours. Every reference
parameter is re-randomised first (dev/design.md §7, the trap).
"""

import pytest
import torch
from reference import randomize_, rel_err

from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig
from nanoocr.encoder_weights import load_encoder_weights

TOL = 1e-4

VISION_KW = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 image_size=32, patch_size=8)  # 4 x 4 grid, 17 positions
# a DeepEncoder whose compressed grid at its Base size is 4 x 4 (64 px / patch 8 / one conv)
OURS = DeepEncoderConfig(image_size=64, patch_size=8, sam_width=32, sam_depth=1, sam_heads=2, sam_mlp=64,
                         window_size=4, global_attn_indexes=(), neck_channels=32, conv_channels=(64,),
                         clip_width=64, clip_depth=2, clip_heads=4, clip_mlp=128, clip_patch=8, out_dim=16)


@pytest.fixture(scope="module")
def clip_ref(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    ref = CLIPModel._from_config(CLIPConfig(vision_config=VISION_KW, text_config=text), attn_implementation="eager").eval()
    randomize_(ref, seed=5)
    tmp = tmp_path_factory.mktemp("clip")
    # HF CLIPModel layout (vision_model.*, text tower, projections, logit_scale, and the position_ids
    # buffer real files may carry), and the bare CLIPVisionModel layout of the same vision weights
    full = {k: v.contiguous() for k, v in ref.state_dict().items()}
    full["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(full, str(tmp / "clip_model.safetensors"))
    save_file({k: v.contiguous() for k, v in ref.vision_model.state_dict().items()}, str(tmp / "clip_vision.safetensors"))
    captured = {}
    hook = ref.vision_model.embeddings.patch_embedding.register_forward_hook(lambda m, i, o: captured.update(p=o))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = ref.vision_model(pixel_values=pixels).last_hidden_state  # before post_layernorm
        patches = captured["p"]
        out2 = ref.vision_model(pixel_values=torch.randn(3, 3, 32, 32)).last_hidden_state
    hook.remove()
    return dict(dir=tmp, pixels=pixels, patches=patches, out=out, out2=out2)


def test_reference_is_not_degenerate(clip_ref):
    out = clip_ref["out"]
    assert out.shape == (3, 17, 64) and clip_ref["patches"].shape == (3, 64, 4, 4)
    assert out.std() > 0.3, f"reference std {out.std():.2e}"
    assert rel_err(clip_ref["out2"][:, 1:], out[:, 1:]) > 0.3, "reference does not depend on its input"


@pytest.mark.parametrize("filename", ["clip_model.safetensors", "clip_vision.safetensors"])
def test_hidden_states_match_clip(clip_ref, filename):
    enc = DeepEncoder(OURS).eval()
    report = load_encoder_weights(enc, clip_ref["dir"] / filename, verbose=False)
    assert set(report["layouts"].values()) == {"clip"}
    assert set(report["fresh"]) == {"sam", "compressor", "projector", "layout"}
    ignored = set(report["ignored"])
    assert any("post_layernorm" in k for k in ignored)
    if filename == "clip_model.safetensors":
        assert {"logit_scale", "vision_model.embeddings.position_ids", "visual_projection.weight"} <= ignored
    with torch.no_grad():
        ours = enc.clip(clip_ref["patches"])
        # the frozen conv loaded key for key: it reproduces the reference's own patch embeddings
        assert enc.clip.patch_embedding(clip_ref["pixels"]).allclose(clip_ref["patches"], atol=1e-5)
    err = rel_err(ours, clip_ref["out"])
    assert err < TOL, f"CLIP hidden states differ: {err:.2e} relative"


def test_perturbed_weight_breaks_the_match(clip_ref):
    enc = DeepEncoder(OURS).eval()
    load_encoder_weights(enc, clip_ref["dir"] / "clip_model.safetensors", verbose=False)
    for name, index in [("clip.position_embedding", (7, 3)), ("clip.blocks.1.attn.qkv.weight", (70, 2)),
                        ("clip.class_embedding", (9,))]:
        with torch.no_grad():
            enc.state_dict()[name][index] += 0.1
            err = rel_err(enc.clip(clip_ref["patches"]), clip_ref["out"])
            enc.state_dict()[name][index] -= 0.1
        assert err > 10 * TOL, f"perturbing {name} changed the output only {err:.2e}"


def test_patch_embedding_is_frozen_and_unused():
    enc = DeepEncoder(OURS)
    assert not enc.clip.patch_embedding.weight.requires_grad
    enc(torch.randn(1, 3, 64, 64)).sum().backward()
    assert enc.clip.patch_embedding.weight.grad is None
    assert enc.clip.blocks[0].attn.qkv.weight.grad is not None
