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

import json
import os
import platform
import statistics
import time

import torch

from nanoocr.common import get_base_dir
from nanoocr.deepencoder import grid_size
from nanoocr.gpt import padded_vocab as gpt_padded_vocab


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
    V = padded_vocab or gpt_padded_vocab(g.vocab_size)
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
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss = model(batch["input_ids"], targets=batch["targets"], images=batch["images"], loss_reduction="sum")
        (loss * loss_scale).backward()
    return counter.get_total_flops()


# -----------------------------------------------------------------------------
# The denominator of MFU: peak FLOP/s (a datasheet for known GPUs, measured elsewhere). The trainer and
# `nanoocr bench` both take it from here (the autocast dtype itself: common.autocast_dtype).

# Dense peak FLOP/s of common accelerators (bf16, no sparsity) for the MFU line; CPUs are measured.
_GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                  "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


# The one peak measurement, for the trainer's progress line and `nanoocr bench` alike, so their MFUs
# divide by the same thing. Sizes stop at 2048: on CPUs the square matmul's rate is flat from N = 512-1024
# on (one thread of this project's Xeon: fp32 ~100-150, bf16 ~800-1050 GFLOP/s at every N up to 4096),
# and 4096 would add ~5 s per fp32 sweep at one thread. The sizes take turns for about a second and
# each reports its median, so a burst of background load hits them alike and no single run decides;
# slower swings (minutes) are what remembered_peak is for.
PEAK_SIZES = (512, 1024, 2048)
PEAK_SECONDS = 1.0      # the sampling window (at least 3 rounds): the trainer's start-up cost
PEAK_RUN_BUDGET_S = 1.0  # leave out the sizes whose one run would take longer (emulated bf16 is ~25x slower)


def matmul_peak(device="cpu", dtype=torch.float32, sizes=PEAK_SIZES, seconds=PEAK_SECONDS, min_rounds=3,
                max_rounds=50):
    """Max over N of the median GFLOP/s of an N x N x N matmul, with that N's min-max and the share of
    the wall time this process was on a CPU (below 1: other processes took the cores). The median, not
    the best run: one lucky run on a shared machine is not a rate the training step can hold."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    mats = {}
    for n in sizes:  # warm-up, smallest first: first-touch pages, kernel selection, and the size budget
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        mats[n] = (a, b, torch.empty(n, n, device=device, dtype=dtype))
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b, out=mats[n][2])
        sync()
        if 8 * (time.perf_counter() - t0) > PEAK_RUN_BUDGET_S:  # the next size is 8x the work
            break
    runs, share = {n: [] for n in mats}, {n: [] for n in mats}
    rounds, t_end = 0, time.perf_counter() + seconds
    while rounds < min_rounds or (time.perf_counter() < t_end and rounds < max_rounds):
        rounds += 1
        for n, (a, b, out) in mats.items():  # the sizes take turns, so a slow spell hits them alike
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            torch.mm(a, b, out=out)
            sync()
            dt = time.perf_counter() - t0
            runs[n].append(2 * n ** 3 / dt / 1e9)
            share[n].append((time.process_time() - c0) / (dt * torch.get_num_threads()))
    del mats
    by_size = {n: dict(median=statistics.median(r), min=min(r), max=max(r), n=len(r),
                       cpu_share=round(statistics.median(share[n]), 3)) for n, r in runs.items()}
    best = max(by_size, key=lambda n: by_size[n]["median"])
    return dict(by_size[best], gflops=by_size[best]["median"], best_n=best,
                by_size={str(n): round(s["median"], 2) for n, s in by_size.items()})


def _device_name(device_type):
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def remembered_peak(device_type, dtype, gflops):
    """The best matmul_peak this machine has shown for this device, dtype, thread count and torch,
    `gflops` (a measurement now) included: kept in <base dir>/matmul_peak.json, which the trainer and
    the bench share. Returns (GFLOP/s, path). Why remember: on a shared machine the rate available now
    swings with the neighbours for minutes at a time (bf16 ~380 or ~1000 GFLOP/s on this project's
    Xeon), so two runs measuring it afresh divide by different numbers; the best one seen is the
    hardware's, and the same for every run."""
    path = os.path.join(get_base_dir(), "matmul_peak.json")
    # the kernels torch runs here are part of the key: the same CPU limited to AVX2 (ATEN_CPU_CAPABILITY)
    # multiplies at another rate
    isa = torch.backends.cpu.get_cpu_capability() if device_type == "cpu" else "cuda"
    key = (f"{_device_name(device_type)} | {isa} | {str(dtype).replace('torch.', '')} | "
           f"{torch.get_num_threads()} threads | torch {torch.__version__}")
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    if gflops > table.get(key, 0.0):
        table[key] = round(gflops, 2)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"  # every rank of a torchrun may write at once
            with open(tmp, "w") as f:
                json.dump(table, f, indent=1)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only base dir: this measurement alone
    return max(gflops, table[key]), path


def peak_flops(device_type, dtype=torch.bfloat16, measured=None):
    """MFU's denominator and where it came from, (FLOP/s, source): the dense datasheet peak for known
    GPUs (fp32 = TF32 at half the bf16 rate), else the remembered best of matmul_peak in `dtype` --
    `measured` joining it when the caller has already run matmul_peak (the bench), a measurement now otherwise."""
    if device_type == "cuda":
        name = torch.cuda.get_device_name()
        for key, value in _GPU_PEAK_BF16.items():
            if key in name:
                return (value if dtype == torch.bfloat16 else value / 2), f"{name}'s dense datasheet peak"
    now = (measured or matmul_peak(device_type, dtype))["gflops"]
    best, path = remembered_peak(device_type, dtype, now)
    return best * 1e9, f"the best square matmul this {device_type} has shown, kept in {path}; {format_flops(now * 1e9)} now"


def format_flops(flops_per_s):
    """825e9 -> '825 GFLOP/s', 9.89e14 -> '989 TFLOP/s' (three significant figures at most)."""
    for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if flops_per_s >= scale:
            v = flops_per_s / scale
            return f"{v:.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"
    return f"{flops_per_s:.3g} FLOP/s"


def dtype_label(amp_dtype, device_type="cpu"):
    """The arithmetic an MFU peak is for: 'bf16', or fp32 ('tf32' on CUDA, where compute_init lets
    fp32 matmuls run on TF32 tensor cores and peak_flops halves the bf16 peak accordingly)."""
    if amp_dtype == torch.bfloat16:
        return "bf16"
    return "tf32" if device_type == "cuda" else "fp32"
