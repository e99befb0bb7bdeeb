"""
Encoder speed: our DeepEncoder vs transformers' UnlimitedOcrVisionModel (same config, same weights).

    python -m scripts.bench_encoder                # CPU preset, 2 threads, 10 timed runs each
    python -m scripts.bench_encoder --runs=20 --threads=1 --backward=0

UnlimitedOcrVisionModel always has exactly two stride-2 convs, while our CPU preset has one, so
the comparison runs at the CPU preset with a second 128->128 conv appended (SAM, the dominant
cost, is unchanged); our time at the true CPU preset is printed alongside for reference.
Runs alternate between the two models so background load hits both alike; medians are reported.
The machine is shared: check `uptime` -- a busy neighbour makes 2 threads slower than 1.
transformers is imported only by the scripts (the nanoocr package never imports it). `nanoocr bench`
runs the same comparison (forward only, sdpa and eager) as part of its suite, with the pair built here.
"""

import os
import time
import argparse
import statistics

import torch

from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig, ENCODER_PRESETS


def reference_pair(attn_impls=("sdpa", "eager")):
    """(our DeepEncoder, {attn_implementation: UnlimitedOcrVisionModel}, config) with the same config
    and the same random weights, in eval mode. UnlimitedOcrVisionModel always has two stride-2
    convs while the CPU preset has one, so the pair uses the CPU preset with a second 128->128 conv
    (SAM, the dominant cost, is unchanged). Raises ImportError without transformers."""
    import tempfile
    from transformers import UnlimitedOcrVisionConfig, UnlimitedOcrVisionModel
    from safetensors.torch import save_file
    from nanoocr.encoder_weights import load_encoder_weights
    preset = dict(ENCODER_PRESETS["cpu"])
    c = DeepEncoderConfig(**{**preset, "conv_channels": (preset["conv_channels"][0],) * 2})
    ref_cfg = UnlimitedOcrVisionConfig(
        sam_config=dict(hidden_size=c.sam_width, num_hidden_layers=c.sam_depth, num_attention_heads=c.sam_heads,
                        window_size=c.window_size, global_attn_indexes=list(c.global_attn_indexes),
                        image_size=c.image_size, patch_size=c.patch_size, output_channels=c.neck_channels,
                        downsample_channels=list(c.conv_channels), mlp_dim=c.sam_mlp),
        encoder_config=dict(hidden_size=c.clip_width, num_hidden_layers=c.clip_depth, num_attention_heads=c.clip_heads,
                            intermediate_size=c.clip_mlp, image_size=(c.image_size // c.stride) * 16, patch_size=16))
    refs = {impl: UnlimitedOcrVisionModel._from_config(ref_cfg, attn_implementation=impl).eval() for impl in attn_impls}
    first = refs[attn_impls[0]]
    # re-randomise the reference (its default init is degenerate) and give every model these weights
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in first.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, torch.nn.LayerNorm):
                    p.copy_((1.0 if name == "weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
    for ref in refs.values():
        if ref is not first:
            ref.load_state_dict(first.state_dict())
    ours = DeepEncoder(c).eval()
    with tempfile.TemporaryDirectory() as tmp:  # through the public loader, as a user's checkpoint would go
        path = os.path.join(tmp, "ref.safetensors")
        save_file({k: v.contiguous() for k, v in first.state_dict().items()}, path)
        load_encoder_weights(ours, path, verbose=False)
    return ours, refs, c


def ours_out(model, x):
    """Our encoder's output in the reference's layout: [CLIP tokens, SAM grid tokens], the same
    function as encode_features minus the projector (the reference has none, so neither side pays for it)."""
    _, compressed = model.sam(x)
    return torch.cat([model.clip(compressed)[:, 1:], compressed.flatten(2).transpose(1, 2)], dim=-1)


def ref_out(model, x):
    return model(x).last_hidden_state


def timed(fn, model, x, backward):
    t0 = time.perf_counter()
    if backward:
        fn(model, x).square().mean().backward()
    else:
        with torch.no_grad():
            fn(model, x)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description="DeepEncoder vs UnlimitedOcrVisionModel forward time")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model and shape (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backward", type=int, default=1, help="also time forward+backward (training)")
    parser.add_argument("--ref_attn", type=str, default="sdpa", help="reference attention: sdpa or eager")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, refs, bench = reference_pair(attn_impls=(args.ref_attn,))
    ref = refs[args.ref_attn]
    ours_cpu = DeepEncoder(DeepEncoderConfig(**ENCODER_PRESETS["cpu"])).eval()

    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}; "
          f"ours: F.scaled_dot_product_attention (rel-pos as additive mask); reference attn_implementation={args.ref_attn}")
    print(f"config: CPU preset + a second stride-2 conv {bench.conv_channels} (reference needs two); "
          f"{sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M params")
    shapes = {"strips 16x3x32x256": (16, 3, 32, 256), "base 4x3x256x256": (4, 3, 256, 256)}
    for label, shape in shapes.items():
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = ours_out(ours, x), ref_out(ref, x)
        err = ((a - b).abs().max() / b.std()).item()
        for backward in ([False, True] if args.backward else [False]):
            times = {"ours": [], "ref": [], "ours@cpu": []}
            for i in range(args.warmup + args.runs):
                for name, fn, model in (("ours", ours_out, ours), ("ref", ref_out, ref), ("ours@cpu", ours_out, ours_cpu)):
                    model.zero_grad(set_to_none=True)
                    t = timed(fn, model, x, backward)
                    if i >= args.warmup:
                        times[name].append(t)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            kind = "fwd+bwd" if backward else "forward"
            print(f"{label:20s} {kind:8s} ours {med['ours']:8.1f} ms | reference {med['ref']:8.1f} ms | "
                  f"ratio ours/ref {med['ours'] / med['ref']:.2f} | ours at the true CPU preset {med['ours@cpu']:7.1f} ms"
                  f" | outputs agree to {err:.1e} rel")


if __name__ == "__main__":
    main()
