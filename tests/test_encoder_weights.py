"""
encoder_weights: layout detection, DeepSeek-OCR's key names (fused CLIP qkv, neck.0-3, net_2/net_3,
view_seperator), sharded directories, and the one error that names every bad key.

The DeepSeek-OCR file is written here from a re-randomised transformers UnlimitedOcrModel by
renaming its keys the way transformers' own conversion rules describe the original release (the
inverse of them), so "the same weights in DeepSeek-OCR's names" must give the same outputs.
"""

import re

import pytest
import torch
from reference import UNLIMITED_CLIP_KW, UNLIMITED_SAM_KW, UNLIMITED_TEXT_KW, randomize_
from safetensors.torch import save_file

from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig
from nanoocr.encoder_weights import detect_layout, load_encoder_weights

OURS = DeepEncoderConfig(image_size=128, patch_size=16, sam_width=64, sam_depth=2, sam_heads=2, sam_mlp=128,
                         window_size=3, global_attn_indexes=(1,), neck_channels=32, conv_channels=(64, 128),
                         clip_width=128, clip_depth=2, clip_heads=2, clip_mlp=256, clip_patch=16, out_dim=128)


SAM_TO_DEEPSEEK = [(r"layers\.(\d+)\.layer_norm([12])\.", r"blocks.\1.norm\2."),
                   (r"layers\.(\d+)\.(attn|mlp)\.", r"blocks.\1.\2."),
                   (r"patch_embed\.projection\.", "patch_embed.proj."),
                   (r"neck\.conv1\.", "neck.0."), (r"neck\.layer_norm1\.", "neck.1."),
                   (r"neck\.conv2\.", "neck.2."), (r"neck\.layer_norm2\.", "neck.3."),
                   (r"proj\.conv1\.", "net_2."), (r"proj\.conv2\.", "net_3.")]


def to_deepseek(sd, spelling="view_seperator"):
    """transformers UnlimitedOcrModel state dict -> DeepSeek-OCR's release names (vision part)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("vision_tower.sam_encoder."):
            k = k[len("vision_tower.sam_encoder."):]
            for pat, rep in SAM_TO_DEEPSEEK:
                k = re.sub(pat, rep, k)
            out["model.sam_model." + k] = v
        elif k.startswith("vision_tower.vision_encoder."):
            k = k[len("vision_tower.vision_encoder."):].replace("encoder.layers.", "transformer.layers.")
            m = re.fullmatch(r"(transformer\.layers\.\d+\.self_attn\.)([qkv])_proj\.(weight|bias)", k)
            if m:
                if m.group(2) == "q":  # fuse q, k, v on dim 0 as the release stores them
                    parts = [sd[f"vision_tower.vision_encoder.{m.group(1).replace('transformer', 'encoder')}{w}_proj.{m.group(3)}"]
                             for w in "qkv"]
                    out[f"model.vision_model.{m.group(1)}qkv_proj.{m.group(3)}"] = torch.cat(parts, 0)
                continue
            out["model.vision_model." + k] = v
        elif k.startswith("multi_modal_projector."):
            out["model.projector.layers." + k.split(".")[-1]] = v
        elif k in ("image_newline", "view_separator"):
            out["model." + (spelling if k == "view_separator" else k)] = v
    return out


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    from transformers import UnlimitedOcrConfig, UnlimitedOcrModel
    cfg = UnlimitedOcrConfig(vision_config=dict(sam_config=UNLIMITED_SAM_KW, encoder_config=UNLIMITED_CLIP_KW), text_config=UNLIMITED_TEXT_KW)
    model = UnlimitedOcrModel(cfg).eval()
    randomize_(model, seed=21)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    tmp = tmp_path_factory.mktemp("weights")
    save_file(sd, str(tmp / "unlimited.safetensors"))
    # DeepSeek-OCR as released: sharded, language model in its own shard; the vision shard also
    # holds CLIP's (unused) patch conv and a position_ids buffer
    ds = to_deepseek(sd)
    ds["model.vision_model.embeddings.patch_embedding.weight"] = torch.randn(128, 3, 16, 16)
    ds["model.vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    lm = {"model.embed_tokens.weight": torch.randn(256, 128), "model.layers.0.self_attn.q_proj.weight": torch.randn(128, 128),
          "model.norm.weight": torch.ones(128), "lm_head.weight": torch.randn(256, 128)}
    (tmp / "deepseek").mkdir()
    save_file(ds, str(tmp / "deepseek" / "model-00001-of-00002.safetensors"))
    save_file(lm, str(tmp / "deepseek" / "model-00002-of-00002.safetensors"))
    return dict(model=model, dir=tmp, sd=sd, ds=ds)


def test_deepseek_layout_loads_to_the_same_outputs(ref):
    a = DeepEncoder(OURS).eval()
    rep_a = load_encoder_weights(a, ref["dir"] / "unlimited.safetensors", verbose=False)
    b = DeepEncoder(OURS).eval()
    rep_b = load_encoder_weights(b, ref["dir"] / "deepseek", verbose=False)  # a directory of shards
    assert sorted(rep_b["layouts"].values()) == ["deepseek_ocr", "lm_only"]
    assert rep_b["fresh"] == {} and rep_a["fresh"] == {"clip_patch": ["clip.patch_embedding.weight"]}
    assert "model.vision_model.embeddings.position_ids" in rep_b["ignored"]
    for k, v in a.state_dict().items():
        if k != "clip.patch_embedding.weight":
            assert v.equal(b.state_dict()[k]), k
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = ref["model"].get_image_features(x).pooler_output[0]
        got = b.embed_image(x)
    err = ((got - expected).abs().max() / expected.std()).item()
    assert expected.std() > 0.3 and err < 1e-4, err


def test_view_separator_spellings_and_single_file(ref, tmp_path):
    ds = to_deepseek(ref["sd"], spelling="view_separator")
    ds["model.vision_model.embeddings.patch_embedding.weight"] = torch.randn(128, 3, 16, 16)
    save_file(ds, str(tmp_path / "ds.safetensors"))
    enc = DeepEncoder(OURS)
    load_encoder_weights(enc, str(tmp_path / "ds.safetensors"), verbose=False)
    assert enc.view_separator.detach().equal(ref["sd"]["view_separator"])
    assert enc.clip.blocks[1].attn.qkv.bias.detach().equal(torch.cat([
        ref["sd"][f"vision_tower.vision_encoder.encoder.layers.1.self_attn.{w}_proj.bias"] for w in "qkv"]))


def test_one_error_names_every_problem(ref, tmp_path):
    ds = dict(ref["ds"])
    del ds["model.sam_model.blocks.1.mlp.lin2.weight"]                          # missing
    ds["model.sam_model.blocks.0.attn.bogus"] = torch.zeros(3)                  # unexpected
    ds["model.sam_model.net_3.weight"] = torch.zeros(128, 64, 3, 5)             # wrong shape
    ds["model.vision_model.transformer.layers.7.mlp.fc1.bias"] = torch.zeros(256)  # a layer we do not have
    save_file(ds, str(tmp_path / "bad.safetensors"))
    enc = DeepEncoder(OURS)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(ValueError) as e:
        load_encoder_weights(enc, tmp_path / "bad.safetensors", verbose=False)
    msg = str(e.value)
    for needle in ("missing (1)", "sam.blocks.1.mlp.lin2.weight", "unexpected (2)", "model.sam_model.blocks.0.attn.bogus",
                   "transformer.layers.7.mlp.fc1.bias", "mis-shaped (1)", "sam.downsample.1.weight", "(128, 64, 3, 5)"):
        assert needle in msg, f"{needle!r} not in:\n{msg}"
    assert all(v.equal(before[k]) for k, v in enc.state_dict().items()), "nothing may be copied on error"


def test_sam_only_sources_leave_compressor_fresh(ref, tmp_path):
    """A HF SamModel file (vision_encoder.* plus prompt encoder / mask decoder) has no net_2/net_3:
    they stay as initialised and are reported; but a SAM part with a key missing is an error."""
    sam = {k.replace("vision_tower.sam_encoder.", "vision_encoder."): v for k, v in ref["sd"].items()
           if k.startswith("vision_tower.sam_encoder.") and ".proj.conv" not in k}
    sam["prompt_encoder.point_embed.0.weight"] = torch.zeros(1, 8)
    sam["mask_decoder.iou_token.weight"] = torch.zeros(1, 8)
    save_file(sam, str(tmp_path / "sam.safetensors"))
    clip = {k.replace("vision_tower.vision_encoder.", "vision_model."): v for k, v in ref["sd"].items()
            if k.startswith("vision_tower.vision_encoder.")}
    clip["vision_model.embeddings.patch_embedding.weight"] = torch.randn(128, 3, 16, 16)
    clip.update({"logit_scale": torch.ones(()), "text_model.embeddings.token_embedding.weight": torch.zeros(4, 8)})
    save_file(clip, str(tmp_path / "clip.safetensors"))
    enc = DeepEncoder(OURS)
    init_conv = enc.sam.downsample[0].weight.detach().clone()
    report = load_encoder_weights(enc, [tmp_path / "sam.safetensors", tmp_path / "clip.safetensors"], verbose=False)
    assert sorted(report["layouts"].values()) == ["clip", "sam"]
    assert set(report["fresh"]) == {"compressor", "projector", "layout"}
    assert report["fresh"]["compressor"] == ["sam.downsample.0.weight", "sam.downsample.1.weight"]
    assert enc.sam.downsample[0].weight.detach().equal(init_conv)
    assert enc.sam.pos_embed.detach().equal(ref["sd"]["vision_tower.sam_encoder.pos_embed"])
    del sam["vision_encoder.layers.0.attn.rel_pos_h"]
    save_file(sam, str(tmp_path / "sam_broken.safetensors"))
    with pytest.raises(ValueError, match=r"missing \(1\):\n    sam.blocks.0.attn.rel_pos_h"):
        load_encoder_weights(enc, tmp_path / "sam_broken.safetensors", verbose=False)
    del clip["vision_model.encoder.layers.1.self_attn.k_proj.weight"]  # HF q/k/v are fused on load
    save_file(clip, str(tmp_path / "clip_broken.safetensors"))
    with pytest.raises(ValueError, match=r"clip.blocks.1.attn.qkv.weight \(only the q/v projection"):
        load_encoder_weights(enc, tmp_path / "clip_broken.safetensors", verbose=False)


def test_layout_detection():
    assert detect_layout(["vision_encoder.patch_embed.projection.weight", "mask_decoder.x"]) == "sam"
    assert detect_layout(["layers.0.attn.qkv.weight"]) == "sam"  # bare SamVisionEncoder
    assert detect_layout(["vision_encoder.embeddings.class_embedding"]) == "unlimited_ocr"
    assert detect_layout(["model.vision_tower.sam_encoder.pos_embed"]) == "unlimited_ocr"
    assert detect_layout(["embeddings.class_embedding", "encoder.layers.0.self_attn.q_proj.weight"]) == "clip"
    assert detect_layout(["text_model.embeddings.token_embedding.weight"]) == "clip"
    assert detect_layout(["model.sam_model.pos_embed"]) == "deepseek_ocr"
    assert detect_layout(["model.layers.0.mlp.gate.weight", "lm_head.weight"]) == "lm_only"
    assert detect_layout(["foo.bar"]) is None


def test_unrecognised_file_is_an_error(tmp_path):
    save_file({"transformer.h.0.attn.weight": torch.zeros(2)}, str(tmp_path / "gpt.safetensors"))
    with pytest.raises(ValueError, match="unrecognised weight layout"):
        load_encoder_weights(DeepEncoder(OURS), tmp_path / "gpt.safetensors", verbose=False)
