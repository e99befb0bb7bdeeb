"""
Load real encoder weights into a DeepEncoder, offline, from safetensors files. One module for
every public layout (dev/design.md §7), detected per file from its key names:

  sam            HF facebook/sam-vit-* (SamModel: vision_encoder.*, or SamVisionModel / bare)
  clip           HF openai/clip-vit-* (CLIPModel / CLIPVisionModel: vision_model.*, or bare)
  deepseek_ocr   DeepSeek-OCR's own file (model.sam_model.*, model.vision_model.* with fused
                 qkv_proj, model.projector.layers, model.image_newline, model.view_seperator)
  unlimited_ocr  transformers' UnlimitedOcr* (sam_encoder.*, vision_encoder.*, optionally under
                 [model.]vision_tower., multi_modal_projector, image_newline, view_separator)
  (a shard holding only a language model -- DeepSeek's model.layers.*, lm_head -- is skipped)

Pass one file, a list (e.g. [sam.safetensors, clip.safetensors]) or a directory (all its
*.safetensors, i.e. every shard). Only the needed tensors are read (safe_open), so the 6 GB
DeepSeek-OCR file costs only its vision part (~0.8 GB in bf16), not the 3B language model.

The encoder is split into parts: sam, compressor (net_2/net_3), clip, clip_patch (the unused
frozen conv), projector, layout (image_newline + view_separator). A part a file provides (or, by
its layout, must provide) has to load completely: every missing, unexpected or mis-shaped key of
all files is collected and raised as ONE error, never silently left random. Parts no file covers
keep their fresh init and are reported -- e.g. net_2/net_3 from a SAM-only source (no public SAM
checkpoint has them) and the projector from SAM + CLIP files. Ignored on purpose: position_ids
buffers, CLIP's text tower / projections / logit_scale / post_layernorm, SAM's prompt encoder and
mask decoder, and language-model weights.
"""

import glob
import os
import re

import torch
from safetensors import safe_open

from nanoocr.common import print0

IGNORE = "<ignore>"

# --- per-layout key rules: (regex on the key, our key template or IGNORE) -------------------------
# Stems shared by layouts; a layout = its prefix patterns + one of these stems.
SAM_HF_STEM = [  # SamVisionEncoder naming (also transformers' UnlimitedOcr sam_encoder)
    (r"patch_embed\.projection\.(weight|bias)", r"sam.patch_embed.\1"),
    (r"pos_embed", r"sam.pos_embed"),
    (r"layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"sam.blocks.\1.norm\2.\3"),
    (r"layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"sam.blocks.\1.attn.\2.\3"),
    (r"layers\.(\d+)\.attn\.(rel_pos_[hw])", r"sam.blocks.\1.attn.\2"),
    (r"layers\.(\d+)\.mlp\.(lin[12])\.(weight|bias)", r"sam.blocks.\1.mlp.\2.\3"),
    (r"neck\.conv([12])\.weight", r"sam.neck.conv\1.weight"),
    (r"neck\.layer_norm([12])\.(weight|bias)", r"sam.neck.norm\1.\2"),
    (r"proj\.conv1\.weight", r"sam.downsample.0.weight"),  # UnlimitedOcr's net_2
    (r"proj\.conv2\.weight", r"sam.downsample.1.weight"),  # UnlimitedOcr's net_3
]
SAM_DEEPSEEK_STEM = [  # DeepSeek-OCR's sam_model (our names follow it)
    (r"patch_embed\.proj\.(weight|bias)", r"sam.patch_embed.\1"),
    (r"pos_embed", r"sam.pos_embed"),
    (r"blocks\.(\d+)\.(norm[12]|attn\.qkv|attn\.proj|mlp\.lin[12])\.(weight|bias)", r"sam.blocks.\1.\2.\3"),
    (r"blocks\.(\d+)\.attn\.(rel_pos_[hw])", r"sam.blocks.\1.attn.\2"),
    (r"neck\.0\.weight", r"sam.neck.conv1.weight"),
    (r"neck\.1\.(weight|bias)", r"sam.neck.norm1.\1"),
    (r"neck\.2\.weight", r"sam.neck.conv2.weight"),
    (r"neck\.3\.(weight|bias)", r"sam.neck.norm2.\1"),
    (r"net_2\.weight", r"sam.downsample.0.weight"),
    (r"net_3\.weight", r"sam.downsample.1.weight"),
]
CLIP_EMBED_STEM = [
    (r"embeddings\.class_embedding", r"clip.class_embedding"),
    (r"embeddings\.patch_embedding\.weight", r"clip.patch_embedding.weight"),
    (r"embeddings\.position_embedding\.weight", r"clip.position_embedding"),
    (r"embeddings\.position_ids", IGNORE),
    (r"pre_layrnorm\.(weight|bias)", r"clip.pre_norm.\1"),
    (r"post_layernorm\.(weight|bias)", IGNORE),  # DeepSeek-OCR feeds the projector before it
]
# A CLIP layer is named alike in both layouts but for the stack ("encoder." in HF, "transformer." in
# DeepSeek-OCR) and its attention input: HF keeps q/k/v apart, DeepSeek-OCR fuses them as we do.
CLIP_LAYER_STEM = [
    (r"layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"clip.blocks.\1.attn.proj.\2"),
    (r"layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"clip.blocks.\1.norm\2.\3"),
    (r"layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"clip.blocks.\1.mlp.\2.\3"),
]
LM_IGNORE = r"(model\.)?(language_model|layers|embed_tokens|norm)\..*|lm_head\..*"


def _prefixed(prefix, stem):
    return [(prefix + pat, rep) for pat, rep in stem]


CLIP_HF_STEM = CLIP_EMBED_STEM + _prefixed(r"encoder\.", [  # q/k/v fused on load ("qkv:" marker)
    (r"layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"qkv:clip.blocks.\1.attn.qkv.\3:\2")] + CLIP_LAYER_STEM)
CLIP_DEEPSEEK_STEM = CLIP_EMBED_STEM + _prefixed(r"transformer\.", [
    (r"layers\.(\d+)\.self_attn\.qkv_proj\.(weight|bias)", r"clip.blocks.\1.attn.qkv.\2")] + CLIP_LAYER_STEM)


LAYOUTS = {
    "sam": _prefixed(r"(?:vision_encoder\.)?", SAM_HF_STEM) + [
        (r"(prompt_encoder|mask_decoder|shared_image_embedding)\..*", IGNORE)],
    "clip": _prefixed(r"(?:vision_model\.)?", CLIP_HF_STEM) + [
        (r"(text_model|visual_projection|text_projection)\..*|logit_scale", IGNORE)],
    "deepseek_ocr": _prefixed(r"(?:model\.)?sam_model\.", SAM_DEEPSEEK_STEM)
        + _prefixed(r"(?:model\.)?vision_model\.", CLIP_DEEPSEEK_STEM) + [
        (r"(?:model\.)?projector\.layers\.(weight|bias)", r"projector.\1"),
        (r"(?:model\.)?image_newline", r"image_newline"),
        (r"(?:model\.)?view_sep[ae]rator", r"view_separator"),  # the release spells it "seperator"
        (LM_IGNORE, IGNORE)],
    "unlimited_ocr": _prefixed(r"(?:model\.)?(?:vision_tower\.)?sam_encoder\.", SAM_HF_STEM)
        + _prefixed(r"(?:model\.)?(?:vision_tower\.)?vision_encoder\.", CLIP_HF_STEM) + [
        (r"(?:model\.)?multi_modal_projector\.(weight|bias)", r"projector.\1"),
        (r"(?:model\.)?image_newline", r"image_newline"),
        (r"(?:model\.)?view_separator", r"view_separator"),
        (LM_IGNORE, IGNORE)],
}
# Parts a layout must provide completely, even where a file happens to lack every key of one.
LAYOUT_PARTS = {
    "sam": {"sam"},
    "clip": {"clip", "clip_patch"},
    "deepseek_ocr": {"sam", "compressor", "clip", "clip_patch", "projector", "layout"},
    "unlimited_ocr": {"sam", "compressor", "clip"},  # it has no CLIP patch conv at all
}
# Detection: the first layout with a key matching its signature wins (order matters: SamModel and
# UnlimitedOcr both use "vision_encoder.", told apart by what follows).
SIGNATURES = [
    ("deepseek_ocr", r"(.*\.)?(sam_model\.|vision_model\.transformer\.|projector\.layers\.|view_seperator$)"),
    ("unlimited_ocr", r"(.*\.)?(sam_encoder\.|multi_modal_projector\.|vision_encoder\.(embeddings|encoder|pre_layrnorm)\.)"),
    ("sam", r"(vision_encoder\.)?(patch_embed\.projection\.|layers\.\d+\.attn\.qkv\.|neck\.conv1\.)"),
    ("clip", r"(vision_model\.)?(embeddings\.class_embedding|encoder\.layers\.\d+\.self_attn\.)|text_model\."),
]


def detect_layout(keys):
    """The layout name of a file from its keys; "lm_only" for a language-model-only shard."""
    for name, sig in SIGNATURES:
        if any(re.fullmatch(sig, k) or re.match(sig, k) for k in keys):
            return name
    if keys and all(re.fullmatch(LM_IGNORE, k) for k in keys):
        return "lm_only"
    return None


def map_key(layout, key):
    """Source key -> our key, IGNORE, "qkv:<our key>:<q|k|v>" for a part to fuse, or None."""
    for pat, rep in LAYOUTS[layout]:
        m = re.fullmatch(pat, key)
        if m:
            return IGNORE if rep == IGNORE else m.expand(rep)
    return None


def part_of(key):
    """Which part of the encoder one of our keys belongs to."""
    if key.startswith("sam.downsample."):
        return "compressor"
    if key.startswith("clip.patch_embedding."):
        return "clip_patch"
    if key in ("image_newline", "view_separator"):
        return "layout"
    return key.split(".")[0]  # sam, clip, projector


def _expand_paths(path_or_paths):
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "*.safetensors")))
            assert found, f"{p}: no *.safetensors files in this directory"
            out += found
        else:
            assert os.path.isfile(p), f"{p}: no such file (expected a .safetensors file or a directory of them)"
            out.append(p)
    return out


@torch.no_grad()
def load_encoder_weights(encoder, path_or_paths, verbose=True):
    """Copy the weights in the given safetensors file(s) / directory into `encoder` (a DeepEncoder),
    in place, converting layouts and dtypes. Raises ValueError naming every missing, unexpected and
    mis-shaped key at once; nothing is copied unless everything checks out. Returns a report
    dict(layouts {path: layout}, loaded [our keys], fresh {part: [our keys left at init]},
    ignored [source keys])."""
    assert hasattr(encoder, "sam") and hasattr(encoder, "clip"), \
        f"load_encoder_weights takes a DeepEncoder (e.g. model.encoder), got {type(encoder).__name__}"
    ours = encoder.state_dict()
    paths = _expand_paths(path_or_paths)
    layouts, found, qkv_parts = {}, {}, {}
    claimed, unexpected, mis_shaped, ignored, duplicate, incomplete = set(), [], [], [], [], []
    for path in paths:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            layout = detect_layout(keys)
            if layout is None:
                raise ValueError(f"{path}: unrecognised weight layout (first keys: {keys[:5]}); expected HF SAM, "
                                 f"HF CLIP, DeepSeek-OCR or transformers' UnlimitedOcr names")
            layouts[path] = layout
            if layout == "lm_only":
                ignored += keys
                continue
            claimed |= LAYOUT_PARTS[layout]
            for key in keys:
                target = map_key(layout, key)
                if target is None:
                    unexpected.append(f"{os.path.basename(path)}:{key}")
                elif target == IGNORE:
                    ignored.append(key)
                elif target.startswith("qkv:"):
                    _, target, which = target.split(":")
                    qkv_parts.setdefault(target, {})[which] = (f.get_tensor(key), f"{os.path.basename(path)}:{key}")
                elif target not in ours:
                    unexpected.append(f"{os.path.basename(path)}:{key} (-> {target}, not in this config)")
                elif target in found:
                    duplicate.append(f"{target} (in {found[target][1]} and {os.path.basename(path)}:{key})")
                else:
                    found[target] = (f.get_tensor(key), f"{os.path.basename(path)}:{key}")
    # fuse separate q/k/v projections into our single qkv (stacked on dim 0, as DeepSeek-OCR's)
    for target, parts in qkv_parts.items():
        if target not in ours:
            unexpected += [f"{src} (-> {target}, not in this config)" for _, src in parts.values()]
        elif set(parts) != {"q", "k", "v"}:
            incomplete.append(f"{target} (only the {'/'.join(sorted(parts))} projection of q/k/v found)")
        else:
            found[target] = (torch.cat([parts[w][0] for w in "qkv"], dim=0), parts["q"][1].replace("q_proj", "{q,k,v}_proj"))
    for target, (tensor, src) in found.items():
        if tuple(tensor.shape) != tuple(ours[target].shape):
            mis_shaped.append(f"{target}: file {tuple(tensor.shape)} ({src}) vs model {tuple(ours[target].shape)}")
    covered = claimed | {part_of(k) for k in found}
    missing = [k for k in ours if k not in found and part_of(k) in covered and k not in qkv_parts] + incomplete
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped", mis_shaped), ("duplicated", duplicate)):
        if items:
            problems.append(f"  {title} ({len(items)}):\n" + "\n".join(f"    {x}" for x in items))
    if problems:
        raise ValueError(f"load_encoder_weights: cannot load {paths} (layouts {sorted(set(layouts.values()))}) "
                         f"into this DeepEncoder config:\n" + "\n".join(problems) +
                         "\nFix: use the encoder size the checkpoint was made for (--encoder_size) (e.g. 'full' for SAM-B / "
                         "CLIP-L / DeepSeek-OCR), and pass every shard (or the directory).")
    for target, (tensor, _) in found.items():
        ours[target].copy_(tensor)  # state_dict tensors share storage with the parameters; casts dtype
    fresh = {}
    for k in ours:
        if k not in found:
            fresh.setdefault(part_of(k), []).append(k)
    report = dict(layouts=layouts, loaded=sorted(found), fresh=fresh, ignored=ignored)
    if verbose:
        print0(f"load_encoder_weights: {len(found)} tensors from {len(paths)} file(s) "
               f"({', '.join(sorted(set(layouts.values())))})")
        if fresh:
            note = {"compressor": " (net_2/net_3: no public SAM checkpoint has them; they must be trained)",
                    "clip_patch": " (unused, frozen)"}
            for part, keys in fresh.items():
                print0(f"  freshly initialised, not in these files: {part} ({len(keys)} tensors){note.get(part, '')}")
    return report
