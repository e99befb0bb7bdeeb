"""
Instruments that tell reading from memorising (dev/design.md §5 and §9):

- collapse: mean pairwise cosine similarity of different images' features, at the compressed
  SAM grid (net_3, where the original project saw 0.59 -> 0.9998) and after the projector, plus
  the diversity ratio ||v - mean_batch(v)|| / ||v|| (below ~0.05 the encoder has collapsed).
- image-ablation gap: val loss with each row given another row's image minus val loss with the
  right images. ~0 means the decoder ignores the image; several nats means it reads.
"""

import torch
import torch.nn.functional as F


def collapse_stats(features):
    """features [B, ...] of B different images -> (mean pairwise cosine, diversity ratio)."""
    v = features.reshape(features.size(0), -1).float()
    B = v.size(0)
    if B < 2:
        return float("nan"), float("nan")
    unit = F.normalize(v, dim=1)
    sim = unit @ unit.T
    mean_cos = (sim.sum() - sim.diagonal().sum()) / (B * (B - 1))
    diversity = (v - v.mean(0, keepdim=True)).norm() / v.norm().clamp_min(1e-12)
    return float(mean_cos), float(diversity)


def roll_images(images, shift=1):
    """Give every row another row's image (a cyclic shift over the batch)."""
    if torch.is_tensor(images):
        return images.roll(shift, dims=0)
    return images[-shift:] + images[:-shift]


@torch.no_grad()
def encoder_collapse(model, images):
    """Collapse stats of a batch of same-size views [B,3,H,W] at net_3 and after the projector."""
    feats = model.encoder.encode_features(images)
    cos_sam, div_sam = collapse_stats(feats["compressed"])
    cos_proj, div_proj = collapse_stats(feats["tokens"])
    return dict(cos_sam=cos_sam, cos_proj=cos_proj, div_sam=div_sam, div_proj=div_proj)


@torch.no_grad()
def loss_and_gap(model, batches, autocast_ctx):
    """(val loss, ablation gap) over batches, each normalised by its answer-token count.
    Only rows with images take part in the ablation (rolling needs >= 2 images)."""
    total, shuffled, n_tokens = 0.0, 0.0, 0
    for b in batches:
        with autocast_ctx:
            total += float(model(b["input_ids"], targets=b["targets"], images=b["images"], loss_reduction="sum"))
            if b["images"] is not None and len(b["images"]) > 1:
                shuffled += float(model(b["input_ids"], targets=b["targets"], images=roll_images(b["images"]),
                                        loss_reduction="sum"))
            else:
                shuffled += float(model(b["input_ids"], targets=b["targets"], images=b["images"], loss_reduction="sum"))
        n_tokens += b["n_answer_tokens"]
    n_tokens = max(n_tokens, 1)
    return total / n_tokens, (shuffled - total) / n_tokens
