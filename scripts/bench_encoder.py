"""
`nanoocr bench --only encoder` (part 3 of the suite): our DeepEncoder against transformers'
UnlimitedOcrVisionModel (same config, same weights), forward and forward + backward, against both
the reference's sdpa and eager attention, with our time at the true CPU preset alongside.

UnlimitedOcrVisionModel always has exactly two stride-2 convs, while our CPU preset has one, so
the comparison runs at the CPU preset with a second 128->128 conv appended (SAM, the dominant
cost, is unchanged); the true CPU preset's time is what training and reading here pay.
transformers is imported only when this section runs (the nanoocr package never imports it);
without it the section is skipped with a message.
"""

import os

import torch

from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig
from scripts.bench_common import alternate, fmt, model_sizes, summary


def reference_pair(attn_impls=("sdpa", "eager")):
    """(our DeepEncoder, {attn_implementation: UnlimitedOcrVisionModel}, config) with the same config
    and the same random weights, in eval mode. UnlimitedOcrVisionModel always has two stride-2
    convs while the CPU preset has one, so the pair uses the CPU preset with a second 128->128 conv
    (SAM, the dominant cost, is unchanged). Raises ImportError without transformers."""
    import tempfile

    from safetensors.torch import save_file
    from transformers import UnlimitedOcrVisionConfig, UnlimitedOcrVisionModel

    from nanoocr.encoder_weights import load_encoder_weights
    sizes = model_sizes("cpu")["encoder"]
    c = DeepEncoderConfig(**{**sizes, "conv_channels": (sizes["conv_channels"][0],) * 2})
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


def fwd_bwd(fn, model, x):
    """One training-style pass: forward, a scalar loss, backward (the gradients are dropped first,
    so every run allocates them as a training step does)."""
    model.zero_grad(set_to_none=True)
    fn(model, x).square().mean().backward()


def timings(times, refs):
    """Our medians, the true CPU preset's, each reference's, and ours / reference run by run."""
    entry = dict(ours_ms=summary(times["ours"], 1000), ours_cpu_preset_ms=summary(times["cpu_preset"], 1000))
    for impl in refs:
        entry[f"{impl}_ms"] = summary(times[impl], 1000)
        entry[impl] = summary([o / r for o, r in zip(times["ours"], times[impl])])  # run-by-run ratios
    return entry


def bench_encoder(shapes, runs, warmup, backward=True):
    """{label: forward timings (+ "fwd_bwd": forward + backward)} for each input shape."""
    try:
        ours, refs, cfg = reference_pair()
    except ImportError as e:
        return dict(skipped=f"transformers is not installed ({e}); pip install transformers==5.24.0 to compare")
    ours_cpu = DeepEncoder(DeepEncoderConfig(**model_sizes("cpu")["encoder"])).eval()
    models = dict(ours=ours, cpu_preset=ours_cpu, **refs)
    out = dict(config="CPU preset + a second stride-2 conv " + str(cfg.conv_channels))
    for label, shape in shapes.items():
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        fn = {name: ref_out if name in refs else ours_out for name in models}
        with torch.inference_mode():
            a = ours_out(ours, x)
            err = max(((a - ref_out(r, x)).abs().max() / a.std()).item() for r in refs.values())
            times = alternate({name: (lambda m=m, f=fn[name]: f(m, x)) for name, m in models.items()}, runs, warmup)
        out[label] = dict(timings(times, refs), max_rel_diff=err)
        if backward:  # what a training step pays for the encoder
            times = alternate({name: (lambda m=m, f=fn[name]: fwd_bwd(f, m, x)) for name, m in models.items()},
                              runs, warmup)
            out[label]["fwd_bwd"] = timings(times, refs)
            for m in models.values():
                m.zero_grad(set_to_none=True)
    return out


def report_rows(enc):
    """(label, value) rows of print_report for this section."""
    if "skipped" in enc:
        return [("encoder / reference", enc["skipped"])]
    rows = []
    for label, e in enc.items():
        if not (isinstance(e, dict) and "ours_ms" in e):
            continue
        for kind, t in (("forward", e), ("fwd+bwd", e.get("fwd_bwd"))):
            if t:
                rows.append((f"encoder / reference, {label}, {kind}",
                             " | ".join(f"{k} {fmt(t[k], 2)}" for k in ("sdpa", "eager") if k in t)
                             + f" (ours {fmt(t['ours_ms'])} ms; {fmt(t['ours_cpu_preset_ms'])} ms at the true CPU preset)"))
    return rows
