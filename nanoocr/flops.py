"""
Analytical FLOP counts for the VLM (DeepEncoder + GPT): the numerator of MFU.

Conventions (the same as torch.utils.flop_counter.FlopCounterMode and nanochat's estimate):
- only matrix products count: Linear, conv, the attention products (q·kᵀ and attn·v), SAM's
  relative-position einsums and the lm_head; norms, activations, softmax, rotary, the loss and
  the optimiser are left out (they are memory-bound and small next to the products);
- a product of an [M, K] by a [K, N] matrix is 2·M·K·N FLOPs;
- attention counts the full T×T score matrix even when causal (the usual convention; a causal
  kernel may skip half of it, which is the kernel's gain, not less model work);
- the lm_head runs over the padded vocabulary (that is what the matmul computes);
- SAM's window attention runs its qkv / proj Linears and the attention on the zero-padded windows
  (sides rounded up to a multiple of the window), as the code does.

Backward costs, per product: the gradient of its input (one product the size of the forward)
when that input needs a gradient, plus the gradient of its weight when the weight trains.
So a trainable layer deep in the network costs 3x its forward, the patch embedding (its input
is the pixels) 2x, and a frozen encoder whose input needs no gradient (Stage 2's SAM) 1x.
The check against FlopCounterMode (tests/test_bench.py, `nanoocr bench`) runs the real model
forward + backward under the counter with the math attention backend: on CPU, torch's fused
attention kernel is not in the counter's table and would otherwise count as zero.
"""

from nanoocr.deepencoder import grid_size


def _linear(tokens, fan_in, fan_out):
    return 2 * tokens * fan_in * fan_out


def _conv(batch, out_h, out_w, c_in, c_out, k):
    return 2 * batch * out_h * out_w * c_in * c_out * k * k


def _pad(n, ws):
    return n + (-n) % ws


def encoder_forward_flops(c, batch, height, width):
    """Forward FLOPs of DeepEncoder(c) on `batch` images of height x width pixels, by part:
    patch_embed, sam (blocks: Linears + attention + rel-pos), neck, compressor, clip, projector."""
    h, w = height // c.patch_size, width // c.patch_size
    d, hd = c.sam_width, c.sam_width // c.sam_heads
    out = dict(patch_embed=_conv(batch, h, w, 3, d, c.patch_size))
    sam = 0
    for i in range(c.sam_depth):
        if i in c.global_attn_indexes:
            n_win, wh, ww = 1, h, w
        else:  # zero-padded to whole windows: every Linear of the attention sees the padding too
            ws = c.window_size
            n_win, wh, ww = (_pad(h, ws) // ws) * (_pad(w, ws) // ws), ws, ws
        seqs, L = batch * n_win, wh * ww
        sam += _linear(seqs * L, d, 3 * d) + _linear(seqs * L, d, d)  # qkv, proj
        sam += 2 * seqs * c.sam_heads * L * hd * (wh + ww)  # rel-pos: q against Rh and Rw
        sam += 4 * seqs * c.sam_heads * L * L * hd  # q·kᵀ and attn·v
        sam += _linear(batch * h * w, d, c.sam_mlp) + _linear(batch * h * w, c.sam_mlp, d)  # MLP (unpadded)
    out["sam"] = sam
    out["neck"] = _conv(batch, h, w, d, c.neck_channels, 1) + _conv(batch, h, w, c.neck_channels, c.neck_channels, 3)
    comp, ch, qh, qw = 0, c.neck_channels, h, w
    for c_out in c.conv_channels:  # 3x3 stride 2, padding 1: ceil halves
        qh, qw = (qh + 1) // 2, (qw + 1) // 2
        comp += _conv(batch, qh, qw, ch, c_out, 3)
        ch = c_out
    out["compressor"] = comp
    assert (qh, qw) == grid_size(c, height, width)
    T, cw = 1 + qh * qw, c.clip_width  # CLS + the grid
    per_block = _linear(batch * T, cw, 3 * cw) + _linear(batch * T, cw, cw) + 4 * batch * T * T * cw \
        + _linear(batch * T, cw, c.clip_mlp) + _linear(batch * T, c.clip_mlp, cw)
    out["clip"] = c.clip_depth * per_block
    out["projector"] = _linear(batch * qh * qw, 2 * cw, c.out_dim)
    return out


def gpt_forward_flops(g, batch, T, padded_vocab=None):
    """Forward FLOPs of the GPT on batch rows of T tokens, by part: blocks (Linears), attention, lm_head."""
    d, hd = g.n_embd, g.n_embd // g.n_head
    V = padded_vocab or ((g.vocab_size + 63) // 64) * 64
    tokens = batch * T
    per_layer = _linear(tokens, d, g.n_head * hd) + 2 * _linear(tokens, d, g.n_kv_head * hd) + _linear(tokens, d, d) \
        + _linear(tokens, d, 4 * d) + _linear(tokens, 4 * d, d)
    return dict(blocks=g.n_layer * per_layer, attention=g.n_layer * 4 * batch * g.n_head * T * T * hd,
                lm_head=_linear(tokens, d, V))


def train_step_flops(encoder_config, gpt_config, batch, T, n_images=None, height=32, width=256, freeze_sam=False,
                     padded_vocab=None):
    """Forward + backward FLOPs of one training micro-batch: `batch` rows of T tokens (padding
    included: the model computes it), of which n_images (default: all) carry an image of
    height x width pixels; text-only rows (Stage 2 mixing) skip the encoder. freeze_sam: SAM +
    neck + compressor frozen (Stage 2), so they run forward only. Returns dict(total, forward,
    and the fwd+bwd FLOPs of each part)."""
    n_images = batch if n_images is None else n_images
    enc = encoder_forward_flops(encoder_config, n_images, height, width) if n_images > 0 else {}
    gpt = gpt_forward_flops(gpt_config, batch, T, padded_vocab)
    parts = {}
    for name, f in enc.items():
        if name in ("patch_embed", "sam", "neck", "compressor") and freeze_sam:
            mult = 1  # frozen and nothing below it needs a gradient: forward only
        elif name == "patch_embed":
            mult = 2  # weight gradient only: the pixels need none
        else:
            mult = 3
        parts[f"encoder.{name}"] = mult * f
    for name, f in gpt.items():
        parts[f"gpt.{name}"] = 3 * f
    return dict(total=sum(parts.values()), forward=sum(enc.values()) + sum(gpt.values()), **parts)


def batch_flops(model, batch, freeze_sam=False):
    """train_step_flops for a dataloader batch (vision_dataloader.collate's dict) and a VLM."""
    B, T = batch["input_ids"].shape
    images = batch["images"]
    if images is None:
        n, H, W = 0, 0, 0
    else:
        assert hasattr(images, "shape"), "batch_flops counts batched same-size views (a [B, 3, H, W] tensor)"
        n, H, W = images.shape[0], images.shape[2], images.shape[3]
    return train_step_flops(model.encoder.config, model.gpt.config, B, T, n_images=n, height=H, width=W,
                            freeze_sam=freeze_sam, padded_vocab=model.gpt.padded_vocab_size)


def counted_flops(model, batch, loss_scale=1.0):
    """The same step counted by torch: forward + backward of `model` on `batch` under
    FlopCounterMode, with the math attention backend so that attention is counted on CPU too.
    Gradients are left in the model's .grad (callers zero them)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    try:
        from torch.nn.attention import sdpa_kernel, SDPBackend
        math_only = sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # torch < 2.3: the old context manager
        import torch
        math_only = torch.backends.cuda.sdp_kernel(enable_flash=False, enable_mem_efficient=False, enable_math=True)
    with counter, math_only:
        loss = model(batch["input_ids"], targets=batch["targets"], images=batch["images"], loss_reduction="sum")
        (loss * loss_scale).backward()
    return counter.get_total_flops()
