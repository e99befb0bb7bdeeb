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
runs the same comparison (forward only, sdpa and eager) as part of its suite.
"""

import os
import time
import argparse
import statistics

import torch

from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig, ENCODER_PRESETS

parser = argparse.ArgumentParser(description="DeepEncoder vs UnlimitedOcrVisionModel forward time")
parser.add_argument("--runs", type=int, default=10, help="timed runs per model and shape (median reported)")
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--backward", type=int, default=1, help="also time forward+backward (training)")
parser.add_argument("--ref_attn", type=str, default="sdpa", help="reference attention: sdpa or eager")
args = parser.parse_args()
torch.set_num_threads(args.threads)

# the pair (same config, same weights) is built in scripts/bench.py, which `nanoocr bench` also uses
from scripts.bench import reference_pair, ours_out, ref_out  # noqa: E402

ours, refs, bench = reference_pair(attn_impls=(args.ref_attn,))
ref = refs[args.ref_attn]
ours_cpu = DeepEncoder(DeepEncoderConfig(**ENCODER_PRESETS["cpu"])).eval()


def timed(fn, model, x, backward):
    t0 = time.perf_counter()
    if backward:
        fn(model, x).square().mean().backward()
    else:
        with torch.no_grad():
            fn(model, x)
    return time.perf_counter() - t0


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
