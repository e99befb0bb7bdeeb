"""
The benchmark suite's correctness (never its timings): the analytic FLOP count that MFU divides
by matches torch's FlopCounterMode on real forward + backward passes, `nanoocr bench --quick
--json` writes every key the README table is built from, `--model=DIR` reads with a trained
model, and the peak that MFU divides by is one measurement shared with the trainer.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig, num_image_tokens
from nanoocr.flops import batch_flops, counted_flops, train_step_flops
from nanoocr.gpt import GPTConfig
from nanoocr.model import build_vlm

VOCAB = 330  # padded to 384 in the lm_head: the count must use the padded size

# DeepSeek-OCR's structure at toy widths: patch 16, two stride-2 convs, window 5 on a 14-wide grid
# (so windows are zero-padded), four blocks with two global, CLIP's frozen patch conv present
FULL_LIKE = dict(image_size=224, patch_size=16, sam_width=64, sam_depth=4, sam_heads=2, sam_mlp=128, window_size=5,
                 global_attn_indexes=(1, 3), neck_channels=32, conv_channels=(48, 64), clip_width=64, clip_depth=2,
                 clip_heads=2, clip_mlp=128, clip_patch=14, out_dim=96)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_case(encoder, gpt_kw, height, width, batch=2, text_rows=0, answer=12, freeze_sam=False):
    """A VLM and a training batch laid out as the dataloader lays it out: rows of
    <|bos|> <|image|>xN prompt+answer, padded, with text-only rows (no image) last."""
    enc = DeepEncoderConfig(**encoder)
    gpt = GPTConfig(sequence_len=512, vocab_size=VOCAB, n_embd=enc.out_dim, **gpt_kw)
    torch.manual_seed(0)
    model = build_vlm(enc, gpt, image_token_id=VOCAB - 1, proj_std=0.02).train()
    if freeze_sam:
        model.encoder.sam.requires_grad_(False)
    n = num_image_tokens(enc, (height, width))
    T = 1 + n + answer
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB - 2, (batch, T), generator=g)
    ids[:batch - text_rows, 1:1 + n] = VOCAB - 1
    targets = torch.randint(0, VOCAB - 2, (batch, T), generator=g)
    targets[:, :1 + n] = -1  # the loss covers the answer only, as in training
    images = torch.randn(batch - text_rows, 3, height, width, generator=g) if batch > text_rows else None
    return model, dict(input_ids=ids, targets=targets, images=images)


@pytest.mark.parametrize("case", [
    dict(encoder=ENCODER_SIZES["cpu"], gpt_kw=dict(n_layer=3, n_head=4, n_kv_head=4), height=32, width=256),
    # Stage 2: SAM frozen (forward only) and a text-only row that skips the encoder
    dict(encoder=ENCODER_SIZES["cpu"], gpt_kw=dict(n_layer=3, n_head=4, n_kv_head=4), height=32, width=256,
         batch=3, text_rows=1, freeze_sam=True),
    dict(encoder=ENCODER_SIZES["cpu"], gpt_kw=dict(n_layer=2, n_head=4, n_kv_head=2), height=128, width=128),
    dict(encoder=FULL_LIKE, gpt_kw=dict(n_layer=2, n_head=3, n_kv_head=1), height=224, width=224),
    # off the native grid: resampled position tables, a padded window row and column
    dict(encoder=FULL_LIKE, gpt_kw=dict(n_layer=2, n_head=3, n_kv_head=1), height=160, width=288, freeze_sam=True),
], ids=["cpu-stage1", "cpu-stage2-text-row", "cpu-gqa-square", "full-like", "full-like-offgrid-frozen"])
def test_analytic_flops_match_flop_counter(case):
    model, batch = make_case(**case)
    analytic = batch_flops(model, batch, freeze_sam=case.get("freeze_sam", False))
    counted = counted_flops(model, batch)
    assert counted > 0
    assert abs(analytic["total"] / counted - 1) < 0.05, (analytic, counted)
    # forward + backward is about 3x the forward (2x for the pixels' patch conv, 1x for frozen parts)
    assert analytic["forward"] < analytic["total"] <= 3 * analytic["forward"]


def test_flop_count_scales_and_counts_backward():
    """Guards against a count that matches by accident: twice the rows is twice the FLOPs, freezing
    SAM removes exactly 2x SAM's forward work (1x for the patch conv, whose input needs no gradient)."""
    enc = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    gpt = GPTConfig(sequence_len=256, vocab_size=VOCAB, n_layer=3, n_head=4, n_kv_head=4, n_embd=enc.out_dim)
    one = train_step_flops(enc, gpt, 1, 60)
    two = train_step_flops(enc, gpt, 2, 60)
    assert two["total"] == 2 * one["total"]
    frozen = train_step_flops(enc, gpt, 1, 60, freeze_sam=True)
    sam_fwd = sum(one[f"encoder.{k}"] / m for k, m in (("sam", 3), ("neck", 3), ("compressor", 3)))
    patch_fwd = one["encoder.patch_embed"] / 2
    assert one["total"] - frozen["total"] == pytest.approx(2 * sam_fwd + patch_fwd)


def test_one_peak_for_the_trainer_and_the_bench(tmp_path, monkeypatch):
    """flops.matmul_peak is the one measurement (median per size, best size); peak_flops divides by the
    best of it this machine has shown, kept in the base dir that the trainer and the bench share, so a
    run measuring in a slow spell does not get its own denominator."""
    from nanoocr import flops
    monkeypatch.setenv("NANOOCR_BASE_DIR", str(tmp_path))
    assert not hasattr(flops, "measure_matmul_peak")
    m = flops.matmul_peak("cpu", torch.float32, sizes=(32, 64), seconds=0.01)
    assert set(m["by_size"]) == {"32", "64"} and m["best_n"] in (32, 64) and m["n"] >= 3
    assert m["gflops"] == m["median"] and abs(m["gflops"] - max(m["by_size"].values())) < 0.01  # (rounded there)
    fast, slow = dict(m, gflops=100.0), dict(m, gflops=40.0)
    assert flops.peak_flops("cpu", torch.float32, measured=fast)[0] == 100e9
    peak, source = flops.peak_flops("cpu", torch.float32, measured=slow)  # a slow spell: the best one stays
    assert peak == 100e9 and "matmul_peak.json" in source and "40 GFLOP/s now" in source
    assert flops.peak_flops("cpu", torch.bfloat16, measured=slow)[0] == 40e9  # per dtype
    torch.set_num_threads(torch.get_num_threads() + 1)
    try:
        assert flops.peak_flops("cpu", torch.float32, measured=slow)[0] == 40e9  # per thread count
    finally:
        torch.set_num_threads(torch.get_num_threads() - 1)


@pytest.mark.slow  # ~40 s: `nanoocr bench --quick`, every part
def test_bench_quick_writes_every_key(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "scripts.cli", "bench", "--quick", "--threads", "1", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in ("matmul_peak_gflops", "train_mfu", "train_samples_per_s", "encoder_vs_reference",
                "generation_cache_speedup", "render_vs_train", "latency", "peak_rss_mb", "loadavg_start", "loadavg_end"):
        assert key in r, f"missing {key}"
    assert r["matmul_peak_gflops"]["fp32"]["gflops"] > 0
    assert "bf16" in r["matmul_peak_gflops"] or "bf16_skipped" in r["matmul_peak_gflops"]
    for key in ("cpu/stage1", "cpu/stage2", "cpu2x/stage1"):
        assert r["train_samples_per_s"][key]["median"] > 0
        s = r["train_mfu"][key]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert abs(r["train"][key]["flops_check"]["ratio"] - 1) < 0.05
    enc = r["encoder_vs_reference"]
    if "skipped" in enc:
        assert "transformers" in enc["skipped"], enc  # names the missing package
    else:  # forward, and forward + backward (what scripts/bench_encoder.py's own CLI used to print)
        entry = enc["strips 16x3x32x256"]
        for t in (entry, entry["fwd_bwd"]):
            assert t["sdpa"]["median"] > 0 and t["eager"]["median"] > 0
            assert t["ours_ms"]["median"] > 0 and t["ours_cpu_preset_ms"]["median"] > 0
        assert entry["max_rel_diff"] < 1e-3  # the two encoders compute the same function
    gen = r["generation_cache_speedup"]["32x256"]
    assert gen["speedup"] > 0 and gen["new_tokens"] == 64
    check_latency(r, images=4)
    rv = r["render_vs_train"]
    assert rv["render_images_per_s"]["median"] > 0 and rv["ratio"] > 0 and rv["pipeline_ratio"] > 0
    assert r["peak_rss_mb"] and all(m["peak_mb"] > 0 for m in r["peak_rss_mb"].values())
    assert "nanoocr bench" in proc.stdout and "MFU" in proc.stdout
    # MFU says what it divides by: the peak in the training dtype, with its unit
    assert re.fullmatch(r"[0-9.]+ [GMT]FLOP/s (bf16|fp32|tf32)", r["mfu_of"]), r["mfu_of"]
    assert "matmul_peak.json" in r["mfu_source"]  # the trainer's peak (no datasheet for a CPU)
    assert "mfu" in proc.stdout and f"% of {r['mfu_of']}" in proc.stdout, proc.stdout[-2000:]


def check_latency(r, images):
    """The latency part's keys (what scripts/bench_generate.py's own CLI used to print)."""
    lat = r["latency"]
    assert lat["images"] == images and lat["answer_tokens_mean"] > 0
    assert lat["model_ms_per_image"] > 0 and lat["model_ms_per_image_batched"] > 0
    if "tesseract" in lat:
        assert lat["tesseract"]["ms_per_image"] > 0 and 0 <= lat["tesseract"]["cer"] <= 2
    else:
        assert "tesseract" in lat["tesseract_skipped"], lat  # names the missing program


def test_bench_reads_with_a_trained_model_and_imports_transformers_only_for_its_part(tmp_path):
    """--model=DIR (an export here) for the generate and latency parts; without the encoder part,
    transformers is never imported."""
    from nanoocr.checkpoint_manager import save_export
    from scripts.bench import bench_tokenizer
    from scripts.bench_common import random_vlm
    tok = bench_tokenizer(vocab_size=400, max_chars=50_000)
    model = random_vlm(tok, "cpu", seq_len=96, gpt_overrides=dict(n_layer=1))
    export = str(tmp_path / "export")
    save_export(export, model, tok, {"model_config": model.config, "user_config": {"mode": "32x256"}, "step": 1})
    out = tmp_path / "bench.json"
    code = ("import sys; from scripts import bench; "
            f"rc = bench.main(['--quick', '--threads', '1', '--only', 'generate,latency', '--model', {export!r}, "
            f"'--json', {str(out)!r}]); "
            "assert 'transformers' not in sys.modules, 'transformers imported without the encoder part'; sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["generation_model"] == export and "train" not in r and "encoder_vs_reference" not in r
    assert r["generation_cache_speedup"]["32x256"]["vocab"] == tok.get_vocab_size()
    check_latency(r, images=4)


def test_bench_model_is_the_cpu_recipe_and_its_modules_form_no_import_circle():
    """The bench times presets/cpu.toml's model at its strip size and batch, and the shared helpers
    sit in a leaf module: bench -> bench_encoder / bench_generate -> bench_common, never back."""
    import ast

    from nanoocr.configurator import read_preset
    from nanoocr.deepencoder import ENCODER_SIZES
    from scripts import bench_common
    p = read_preset("cpu")
    sizes = bench_common.model_sizes("cpu")
    assert sizes == dict(encoder=ENCODER_SIZES[p["encoder_size"]], gpt=dict(n_layer=p["gpt_depth"], n_head=p["gpt_n_head"]))
    assert bench_common.STRIP == (32, 256) and bench_common.BATCH == p["device_batch_size"]
    wide = bench_common.model_sizes("cpu2x")  # derived from the same preset: every width and depth doubled
    for k in bench_common.DOUBLED_KEYS + ("conv_channels",):
        one, two = sizes["encoder"][k], wide["encoder"][k]
        assert two == (2 * one if isinstance(one, int) else tuple(2 * c for c in one)), k
    assert wide["encoder"]["global_attn_indexes"] == (2, 5) and wide["gpt"]["n_layer"] == 2 * p["gpt_depth"]
    assert wide["encoder"]["out_dim"] == 64 * wide["gpt"]["n_head"]
    same = [k for k in sizes["encoder"] if k not in bench_common.DOUBLED_KEYS + ("conv_channels", "global_attn_indexes")]
    assert len(same) == 4 and all(wide["encoder"][k] == sizes["encoder"][k] for k in same), same  # sizes, patch, window
    with pytest.raises(ValueError, match="cpu2x"):
        bench_common.model_sizes("big")

    def script_imports(name):
        tree = ast.parse(open(os.path.join(REPO, "scripts", name + ".py")).read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scripts"):
                found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
        return found
    assert script_imports("bench_common") == set()
    assert script_imports("bench_encoder") == {"bench_common"}
    assert script_imports("bench_generate") == {"bench_common"}
    assert script_imports("bench") == {"bench_common", "bench_encoder", "bench_generate"}
