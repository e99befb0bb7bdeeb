"""
What the parts of `nanoocr bench` share (scripts/bench.py, bench_encoder.py, bench_generate.py): the
model it times, built from presets/cpu.toml so the bench measures the recipe the speedrun trains,
and the timing and summary helpers. A leaf: it imports no other bench module, so the parts import
it and never each other.
"""

import statistics
import time

import torch

from nanoocr.configurator import read_preset
from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
from nanoocr.gpt import GPTConfig
from nanoocr.model import build_vlm
from nanoocr.modes import parse_mode

RECIPE = read_preset("cpu")  # the CPU recipe's Stage 1: its model sizes, strip mode and batch
STRIP = parse_mode(RECIPE["mode"])      # (32, 256): one text line per image
BATCH = RECIPE["device_batch_size"]     # 16
SEQ_LEN = 256  # room for the strip's tokens and every answer the bench draws (the recipe trains at 128)

MODELS = ("cpu", "cpu2x")
# "cpu2x": the recipe's model with every width and the depths doubled, which shows how MFU grows
# with the matrices (a 2x wider Linear has 4x the work per memory-bound op around it). Derived from
# the recipe, so the two never drift apart: each half of the doubled SAM ends in a global block as
# the recipe's does, and the GPT's heads are 64 wide.
DOUBLED_KEYS = ("sam_width", "sam_depth", "sam_heads", "sam_mlp", "neck_channels", "clip_width", "clip_depth",
                "clip_heads", "clip_mlp", "out_dim")
HEAD_DIM_2X = 64


def model_sizes(name):
    """dict(encoder=DeepEncoderConfig kwargs, gpt=dict(n_layer, n_head)) of a bench model: "cpu" is
    presets/cpu.toml's, "cpu2x" the same doubled."""
    if name not in MODELS:
        raise ValueError(f"bench model {name!r}: one of {', '.join(MODELS)}")
    encoder = dict(ENCODER_SIZES[RECIPE["encoder_size"]])
    gpt = dict(n_layer=RECIPE["gpt_depth"], n_head=RECIPE["gpt_n_head"])
    if name == "cpu2x":
        one = dict(encoder)
        encoder.update({k: 2 * one[k] for k in DOUBLED_KEYS}, conv_channels=tuple(2 * c for c in one["conv_channels"]),
                       global_attn_indexes=tuple(i + half for half in (0, one["sam_depth"])
                                                 for i in one["global_attn_indexes"]))
        gpt = dict(n_layer=2 * gpt["n_layer"], n_head=encoder["out_dim"] // HEAD_DIM_2X)
    return dict(encoder=encoder, gpt=gpt)


def random_vlm(tok, name="cpu", seq_len=SEQ_LEN, device="cpu", gpt_overrides=None):
    """A randomly initialised VLM of model_sizes(name) with tok's vocabulary (the recipe's proj_std,
    so every part is live from the first step)."""
    p = model_sizes(name)
    enc = DeepEncoderConfig(**p["encoder"])
    g = dict(p["gpt"], **(gpt_overrides or {}))
    gpt = GPTConfig(sequence_len=seq_len, vocab_size=tok.get_vocab_size(), n_layer=g["n_layer"], n_head=g["n_head"],
                    n_kv_head=g["n_head"], n_embd=enc.out_dim)
    torch.manual_seed(0)
    return build_vlm(enc, gpt, tok.image_id, device=device, proj_std=RECIPE["proj_std"])


def never_end(net, tok):
    """Make <|assistant_end|> lose every argmax (its lm_head row -> 0 while the best other logit is > 0
    for all practical purposes), so a generation runs to max_tokens."""
    with torch.no_grad():
        net.gpt.lm_head.weight[tok.encode_special("<|assistant_end|>")] = 0.0


def summary(values, scale=1.0):
    """{median, min, max, n} of a list of measurements (times scale)."""
    v = [x * scale for x in values]
    return dict(median=statistics.median(v), min=min(v), max=max(v), n=len(v))


def alternate(fns, runs, warmup):
    """Time each of fns (name -> zero-argument callable) `warmup + runs` times, interleaved so that
    drift in background load hits every one alike. Returns name -> list of seconds (timed runs)."""
    times = {name: [] for name in fns}
    for i in range(warmup + runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def fmt(s, digits=1):
    """A summary() as 'median (min-max)', '-' for a part that did not run."""
    if not isinstance(s, dict) or "median" not in s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"
