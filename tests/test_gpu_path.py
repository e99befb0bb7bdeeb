"""The GPU path, tested on the CPU: batch arithmetic that holds for any world size (the pure
function for every preset, then torchrun with 2 gloo ranks for the gpu and full presets), the GPU
speedrun trained on pages end to end at tiny dims (Stage 1 -> Stage 2 -> eval with compression
buckets -> report), the full recipe's safe defaults (real weights or --from_scratch, no tokenizer of
another size) and dev/gpu_check.sh's CPU dry run."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from nanoocr.checkpoint_manager import committed_steps, load_meta
from nanoocr.common import batch_plan
from nanoocr.configurator import read_preset


def _env(base, **extra):
    env = dict(os.environ, NANOOCR_BASE_DIR=str(base), OMP_NUM_THREADS="1", PYTHONPATH=REPO, **extra)
    env.pop("NANOOCR_DEVICE", None)
    return env


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A base dir with a small tokenizer (300 ids), shared by this module's training runs."""
    base = tmp_path_factory.mktemp("gpu_path_base")
    from nanoocr.synth_text import corpus_iter
    from nanoocr.tokenizer import Tokenizer
    Tokenizer.train_from_iterator(corpus_iter(max_chars=100_000), vocab_size=300).save(str(base / "tokenizer"))
    return base


# -----------------------------------------------------------------------------
# 1. batch arithmetic

def test_batch_plan_examples():
    # the gpu preset's old device = total = 64 on 2 ranks, which once failed
    p = batch_plan(64, 64, 2)
    assert (p["total"], p["device"], p["accum"]) == (64, 32, 1) and len(p["notes"]) == 1 and "64 -> 32" in p["notes"][0]
    # runs/full.sh on 3 GPUs: 64 rows round up to 66, 22 per rank = 2 micro-batches of 11
    p = batch_plan(64, 16, 3)
    assert (p["total"], p["per_rank"], p["device"], p["accum"]) == (66, 22, 11, 2)
    assert any("rounded up to 66" in n for n in p["notes"])
    # 7 GPUs, the full preset's 4 rows per device: 70 rows, 10 per rank, 2 x 5
    assert (lambda q: (q["total"], q["device"], q["accum"]))(batch_plan(64, 4, 7)) == (70, 2, 5)
    # nothing to change: no notes, the request kept
    p = batch_plan(16, 16, 1)
    assert (p["total"], p["device"], p["accum"], p["notes"]) == (16, 16, 1, [])
    # a prime per-rank count only splits into rows of 1 (never raised above the request)
    assert (lambda q: (q["device"], q["accum"]))(batch_plan(13, 4, 1)) == (1, 13)
    with pytest.raises(AssertionError, match="device_batch_size"):
        batch_plan(16, 0, 1)


def _preset_batches():
    """(name, total, device) for every preset file, with vis_tok_train's defaults (16, 16) underneath."""
    out = []
    for path in sorted(glob.glob(os.path.join(REPO, "presets", "*.toml"))):
        name = os.path.basename(path)[:-len(".toml")]
        v = read_preset(name)
        out.append((name, v.get("total_batch_size", 16), v.get("device_batch_size", 16)))
    return out


def test_batch_plan_holds_for_every_preset_and_world_size():
    presets = _preset_batches()
    assert {"cpu", "gpu", "gpu_mid", "full", "full_mid"} <= {n for n, _, _ in presets}
    for name, total, device in presets:
        for ws in range(1, 9):
            p = batch_plan(total, device, ws)
            ctx = (name, total, device, ws, p)
            assert p["total"] >= total and p["total"] - total < ws and p["total"] % ws == 0, ctx
            assert p["device"] * p["accum"] * ws == p["total"], ctx
            assert 1 <= p["device"] <= device, ctx
            # the largest divisor <= the request: no bigger micro-batch would split the rows evenly
            assert not any(p["per_rank"] % d == 0 for d in range(p["device"] + 1, device + 1)), ctx
            assert bool(p["notes"]) == (p["total"] != total or p["device"] != device), ctx


# shrunk dims (memory and time), the presets' batch settings kept: one step of line strips per launch
SHRINK = ["--encoder_size=cpu", "--gpt_depth=1", "--gpt_n_embd=64", "--gpt_n_head=1", "--mode=32x128",
          "--synth_kinds=line", "--seq_len=48", "--num_steps=1", "--eval_every=0", "--cer_samples=0",
          "--save_every=0", "--num_workers=0", "--dtype=float32", "--log_every=1", "--easy_steps=0",
          "--warmup_steps=1"]


@pytest.mark.parametrize("preset,extra,expect", [
    # a command that once failed: device = total = 64 (the gpu preset's old values) on 2 ranks
    ("gpu", ["--device_batch_size=64", "--total_batch_size=64"], "1 micro-batch(es) of 32 x 2 rank(s)"),
    # the full preset as it is: 64 rows, 4 per device -> 8 micro-batches per rank
    ("full", ["--from_scratch=True", "--tokenizer_vocab=0"], "8 micro-batch(es) of 4 x 2 rank(s)"),
])
@pytest.mark.slow  # ~15 s each: torchrun with 2 gloo ranks
def test_torchrun_two_ranks_runs_the_preset_batches(base, preset, extra, expect):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scripts.vis_tok_train", f"--preset={preset}", "--device_type=cpu", f"--tag=ddp_{preset}"] + SHRINK + extra
    p = subprocess.run(cmd, cwd=REPO, env=_env(base, MASTER_ADDR="127.0.0.1"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert expect in p.stdout, p.stdout[-2000:]
    if preset == "gpu":
        assert "batch: device_batch_size 64 -> 32" in p.stdout, p.stdout[-2000:]
    assert re.search(r"mfu [0-9.]+% of [0-9.]+ [GMT]FLOP/s fp32", p.stdout), p.stdout[-2000:]
    d = os.path.join(base, "vis_tok_checkpoints", f"ddp_{preset}")
    meta = load_meta(d, committed_steps(d)[-1])
    assert meta["user_config"]["total_batch_size"] == 64 and len(meta["loop"]["losses"]) == 1
    assert meta["user_config"]["device_batch_size"] == (32 if preset == "gpu" else 4)


# -----------------------------------------------------------------------------
# 2. the GPU speedrun trains pages (and 4., the MFU label)

def test_gpu_encoder_size_is_the_real_structure():
    """DeepSeek-OCR's geometry at a smaller width: 16-px patches on a 1024 Base side, windowed SAM with
    global blocks, two stride-2 convs (16x compression), CLIP on the conv grid -- so the resolution
    modes have the full preset's token counts -- and a forward that gives the counted tokens."""
    import torch

    from nanoocr.deepencoder import (
        ENCODER_SIZES,
        DeepEncoder,
        DeepEncoderConfig,
        num_image_tokens,
    )
    gpu, full = DeepEncoderConfig(**ENCODER_SIZES["gpu"]), DeepEncoderConfig(**ENCODER_SIZES["full"])
    assert gpu.num_convs == 2 and gpu.stride == 64 and gpu.global_attn_indexes and gpu.window_size == 14
    for mode in ("tiny", "small", "base", "large"):
        assert num_image_tokens(gpu, mode) == num_image_tokens(full, mode)
    assert read_preset("gpu")["encoder_size"] == "gpu" == read_preset("gpu_mid")["encoder_size"]
    enc = DeepEncoder(gpu)
    n_params = sum(p.numel() for p in enc.parameters())
    assert 25e6 < n_params < 45e6, n_params  # ~34M: about a twelfth of the full DeepEncoder's ~400M
    with torch.no_grad():
        tokens = enc(torch.randn(1, 3, 128, 192))
    assert tokens.shape == (1, 2 * 3, gpu.out_dim), tokens.shape


def test_mfu_labels_say_the_peak_and_dtype():
    import torch

    from nanoocr.flops import dtype_label, format_flops
    assert format_flops(825e9) == "825 GFLOP/s" and format_flops(9.89e14) == "989 TFLOP/s"
    assert format_flops(86.6e9) == "86.6 GFLOP/s"
    assert dtype_label(torch.bfloat16, "cpu") == "bf16" and dtype_label(None, "cpu") == "fp32"
    assert dtype_label(None, "cuda") == "tf32"


# Stage 1 -> Stage 2 -> eval (compression buckets) -> report, the gpu presets at tiny dims

TINY_PAGES = ["--encoder_size=cpu", "--gpt_depth=1", "--gpt_n_embd=128", "--gpt_n_head=2", "--seq_len=320",
              "--num_steps=2", "--device_batch_size=2", "--total_batch_size=4", "--warmup_steps=1", "--easy_steps=1",
              "--encoder_freeze_steps=1", "--eval_every=0", "--eval_batches=1", "--cer_samples=2", "--max_new_tokens=8",
              "--save_every=0", "--num_workers=0", "--dtype=float32", "--log_every=1"]


@pytest.mark.slow  # ~40 s: Stage 1 -> Stage 2 -> eval -> report at tiny dims
def test_gpu_speedrun_dry_run_reads_pages(base):
    def run(preset, args):
        p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train", f"--preset={preset}", "--device_type=cpu"] + args, cwd=REPO,
                           env=_env(base), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return p.stdout
    out1 = run("gpu", TINY_PAGES)
    out2 = run("gpu_mid", TINY_PAGES)
    s1, s2 = base / "vis_tok_checkpoints" / "gpu", base / "vis_mid_checkpoints" / "gpu"
    m1, m2 = load_meta(str(s1), 2), load_meta(str(s2), 2)
    # the presets' task: whole pages (and receipts, strips) in DeepSeek-OCR's Base mode, no CTC
    for m in (m1, m2):
        assert m["user_config"]["mode"] == "base" and "page" in m["user_config"]["synth_kinds"]
        assert m["user_config"]["ctc_weight"] == 0
    assert m1["user_config"]["preset"] == "gpu" and m1["user_config"]["matrix_lr"] > 0
    assert m2["user_config"]["preset"] == "gpu_mid" and m2["user_config"]["freeze_sam"] and m2["stage"] == 2
    assert "mode base" in out1 and "val_cer" in out1 and "val_cer" in out2
    assert "Muon" in out1  # the GPT's matrices on Muon, as the preset says

    ev = subprocess.run([sys.executable, "-m", "scripts.vision_eval", f"--model={s2}", "--data=synth", "--split=test",
                         "--limit=3", "--max_tokens=8", "--device_type=cpu", f"--out={base}/eval/pages.jsonl"],
                        cwd=REPO, env=_env(base), capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    metrics = json.loads((base / "eval" / "pages.metrics.json").read_text())
    assert metrics["mode"] == "base"
    buckets = metrics["model"]["compression_buckets"]
    assert buckets and sum(b["n"] for b in buckets) == 3, buckets
    # compression = answer tokens / vision tokens: a Base page of the cpu encoder has 256 vision tokens
    recs = [json.loads(line) for line in (base / "eval" / "pages.jsonl").read_text().splitlines()]
    assert all(0 < r["vision_tokens"] <= 256 for r in recs), recs  # a padded receipt / strip: its valid part
    assert all(r["vision_tokens"] == 256 for r in recs if "-page-" in r.get("id", "")), recs
    ratios = [r["answer_tokens"] / r["vision_tokens"] for r in recs]
    assert abs(sum(b["mean_ratio"] * b["n"] for b in buckets) - sum(ratios)) < 1e-6 and min(ratios) > 0
    assert "compression" in ev.stdout

    rep = subprocess.run([sys.executable, "-m", "scripts.report", "--tag=gpu", "--evals=pages"], cwd=REPO,
                         env=_env(base), capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    report = (base / "report" / "report.md").read_text()
    assert "Stage 1" in report and "Stage 2" in report and "pages" in report


# -----------------------------------------------------------------------------
# 3. the full recipe's safe defaults

FULL_TINY = ["--encoder_size=cpu", "--gpt_depth=1", "--gpt_n_embd=64", "--gpt_n_head=1", "--mode=32x128",
             "--synth_kinds=line", "--seq_len=48", "--num_steps=1", "--device_batch_size=2", "--total_batch_size=2",
             "--eval_every=0", "--cer_samples=0", "--save_every=0", "--num_workers=0", "--dtype=float32"]


def test_full_preset_without_weights_stops_naming_them(base):
    p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train", "--preset=full", "--tag=noweights",
                        "--tokenizer_vocab=0"] + FULL_TINY, cwd=REPO, env=_env(base), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0
    for needle in ("--encoder_weights=", "sam-vit-base", "clip-vit-large-patch14", "--nanochat_dir=", "--from_scratch=True"):
        assert needle in p.stderr, (needle, p.stderr[-2000:])
    assert not (base / "vis_tok_checkpoints" / "noweights").exists()


def test_full_preset_refuses_a_tokenizer_of_another_size(base):
    # the script: the 300-id tokenizer in the base dir against the preset's 65536
    p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train", "--preset=full", "--tag=wrongtok",
                        "--from_scratch=True"] + FULL_TINY, cwd=REPO, env=_env(base), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "has 300 ids, this run expects 65536" in p.stderr, p.stderr[-2000:]
    # runs/full.sh: the same refusal before any training (the speedrun's tokenizer in the same base dir)
    p = subprocess.run(["bash", "runs/full.sh", "--from_scratch=True"] + FULL_TINY, cwd=REPO,
                       env=_env(base, NPROC="1"), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "300-id tokenizer" in p.stderr and "needs 65536" in p.stderr, p.stderr[-2000:]
    assert not (base / "vis_tok_checkpoints" / "full").exists()


# -----------------------------------------------------------------------------
# 5. dev/gpu_check.sh, dry-run on the CPU

@pytest.mark.slow  # ~35 s: the whole script, dry-run
def test_gpu_check_dry_run_on_cpu(tmp_path):
    p = subprocess.run(["bash", "dev/gpu_check.sh"], cwd=REPO, env=_env(tmp_path, GPU_CHECK_CPU="1"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    summary = p.stdout.split("=== gpu_check summary")[-1]
    for run in ("gpu", "full"):
        assert re.search(rf"\[{run}\] MFU denominator: [0-9.]+ [GMT]FLOP/s fp32", summary), summary
        assert re.search(rf"\[{run}\] [0-9.,]+ samples/s \| [0-9,]+ tok/s \| mfu [0-9.]+% of", summary), summary
        assert re.search(rf"\[{run}\] peak memory: [0-9.]+ GiB", summary), summary
    assert re.search(r"\[gpu\] first val_cer [0-9.]+", summary), summary
    assert re.search(r"\[generate\] generate batch 1: [0-9.,]+ tokens/s \(4 tokens", summary), summary
    assert re.search(r"\[generate\] generate batch 16: [0-9.,]+ tokens/s \(64 tokens", summary), summary
    # (5) the page eval in two modes with the reading checks, as runs/pages_cpu.sh runs it
    assert re.search(r"\[pages\] reading, not recalling \(2 samples, mode base\): distinct outputs [12]/2", summary), summary
    pages = json.loads((tmp_path / "gpu_check" / "pages.metrics.json").read_text())
    assert pages["modes"] == ["base", "tiny"] and all(pages["by_mode"][m]["model"]["n"] == 2 for m in pages["modes"])
    assert committed_steps(str(tmp_path / "vis_tok_checkpoints" / "gpu_check")) == [2]
    assert committed_steps(str(tmp_path / "vis_tok_checkpoints" / "full_check")) == [2]
