"""
Speed on this machine, measured against its own limits and against reference code, in one process.
The one benchmark command (parts 3, 4 and 6 live in scripts/bench_encoder.py and bench_generate.py):

    nanoocr bench                      # the full suite (~3 minutes on 2 CPU cores at 1 thread)
    nanoocr bench --quick              # smaller repeats and sizes (~40 seconds)
    nanoocr bench --json bench.json --threads 1
    nanoocr bench --only train --profile
    nanoocr bench --only generate,latency --model=DIR   # a trained model instead of a random one

1. matmul peak (`matmul`): the best median FLOP/s over square fp32 matmuls, N = 512 .. 2048 (bf16 too
   where the CPU multiplies it natively; GPUs always) -- flops.matmul_peak, the trainer's own
   measurement; MFU divides by the best of it this machine has shown (flops.peak_flops, kept in
   <base dir>/matmul_peak.json), so the trainer's and the bench's MFUs divide by the same number
   (on a known GPU both take its datasheet peak);
2. training steps (`train`; Stage 1: all trainable; Stage 2: SAM frozen, 10% text rows) of the CPU
   recipe's model (presets/cpu.toml, via bench_common) and a 2x-wider one, on batches rendered
   beforehand: samples/s, tokens/s, MFU = analytic model FLOPs (nanoocr/flops.py, checked here
   against FlopCounterMode) / step time / the peak of 1 in the training dtype (the trainer's
   progress line prints the same MFU with and without its data wait);
3. our DeepEncoder's forward and forward + backward time / transformers' UnlimitedOcrVisionModel's
   (same config, same weights; sdpa and eager attention), with ours at the CPU
   recipe's true size alongside
   (`encoder`; skipped, with a message, without transformers);
4. generation tokens/s with the vision + KV cache against the naive loop that re-encodes the image
   and re-runs the sequence for every token (`generate`; 256 new tokens, 64 with --quick);
5. the renderer's images/s (and the whole data pipeline's samples/s: render + preprocess +
   tokenize + collate) against what the training step consumes (`render`);
6. per-image reading time of rendered val line strips, batch 1 and 8, against Tesseract on the same
   images (`latency`; Tesseract skipped, with a message, where it is not installed);
7. peak resident memory of every measurement (VmHWM, reset before each one).

Everything is a median over repeats with its min-max; ratios of two programs are taken run by
run with the two alternating, so background load hits both alike. Shared machines drift, so the
output also has the load average at start and end, the peak measured again at the end, MFU
against a peak probed right after every step (mfu_vs_peak_now), and cpu_share: the fraction of
the wall time this process's threads were on a CPU (below 1: other processes took the cores; with
a busy neighbour use --threads 1, as every parallel region otherwise waits for a descheduled
thread). The model weights are random (speed does not depend on them; --model reads with a trained
one) and the tokenizer is a 512-id BPE trained on the built-in corpus in a second.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from nanoocr import flops as flopcount
from nanoocr.common import autocast_dtype, cpu_has_fast_bf16, tune_malloc
from nanoocr.configurator import read_preset
from nanoocr.deepencoder import DeepEncoderConfig
from nanoocr.flops import dtype_label, format_flops, matmul_peak, peak_flops
from scripts import bench_encoder, bench_generate
from scripts.bench_common import (
    BATCH,
    SEQ_LEN,
    STRIP,
    fmt,
    model_sizes,
    never_end,
    random_vlm,
    summary,
)

PARTS = ("matmul", "train", "encoder", "generate", "render", "latency")  # --only's choices; all = the full suite


# -----------------------------------------------------------------------------
# Measurement helpers

def _proc_status_mb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _malloc_trim():
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class PeakRSS:
    """Peak resident memory (MB) of what runs inside the block. VmHWM is per process and only ever
    grows, so it is reset first (writing 5 to /proc/self/clear_refs, Linux >= 4.0): the peak is then
    this measurement's own, on top of whatever the process already held (start_mb). Where the reset
    is impossible the value is the process's peak so far (monotonic) and says so."""

    def __enter__(self):
        gc.collect()
        _malloc_trim()  # hand freed heap memory back first, so the start is what is really live
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.start_mb = _proc_status_mb("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = round(time.perf_counter() - self.t0, 1)
        peak = _proc_status_mb("VmHWM")
        if peak is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS), monotonic
            import resource
            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = r / 2**20 if sys.platform == "darwin" else r / 1024
        self.result = dict(peak_mb=round(peak, 1), start_mb=None if self.start_mb is None else round(self.start_mb, 1),
                           reset=self.reset)
        return False


def machine_info(threads):
    model = platform.processor() or platform.machine()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return dict(cpu=model, cores=os.cpu_count(), isa=isa, threads=threads, torch=torch.__version__,
                python=platform.python_version(), fast_bf16=cpu_has_fast_bf16(),
                cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


# -----------------------------------------------------------------------------
# Models and data

def bench_tokenizer(vocab_size=512, max_chars=300_000):
    """A small BPE trained on the renderer's own text in about a second (the CPU recipe's size)."""
    from nanoocr.synth_text import corpus_iter
    from nanoocr.tokenizer import Tokenizer
    return Tokenizer.train_from_iterator(corpus_iter(max_chars=max_chars), vocab_size)


def training_batches(model, tok, n, stage, batch_size=BATCH, seq_len=SEQ_LEN, seed=0):
    """n real training batches of rendered line strips (Stage 2: 10% text-only rows), prepared
    before any timing: the data pipeline is measured on its own in part 5."""
    from nanoocr.vision_dataloader import vision_data_generator
    from tasks.sources import synth_source, synth_text_source
    gen = vision_data_generator(synth_source("train", "line", seed, mode=STRIP), tok, model.encoder.config,
                                batch_size, seq_len, STRIP, text_ratio=0.1 if stage == 2 else 0.0,
                                get_text=synth_text_source("train", seed), seed=seed, log=lambda *a: None)
    return [next(gen)[0] for _ in range(n)]


def recipe_optimizers(model, stage):
    """The CPU recipe's optimisers for this stage (presets/cpu.toml, presets/cpu_mid.toml): AdamW, plus Muon
    for the GPT blocks' matrices where the preset sets matrix_lr -- ~1.25x a Stage 1 step here, so a
    bench without it would time a cheaper step than the trainer's (dev/LOG.md "One MFU"). The recipe's
    CTC head is left out: its cost measured within the noise."""
    p = read_preset("cpu" if stage == 1 else "cpu_mid")
    return model.setup_optimizers(matrix_lr=p.get("matrix_lr", 0.0), muon_encoder=p.get("muon_encoder", False))


def train_step(model, optimizers, batch, amp_ctx, grad_clip=1.0):
    """scripts/vis_tok_train.py's step, one micro-batch: sum-loss / answer-token count, backward,
    clip, each optimiser's step and zero_grad. Returns the loss (a float, which also waits for the
    step to finish)."""
    n_tokens = max(float(batch["n_answer_tokens"]), 1.0)
    with amp_ctx:
        loss_sum = model(batch["input_ids"], targets=batch["targets"], images=batch["images"], loss_reduction="sum")
    (loss_sum / n_tokens).backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return float(loss_sum.detach()) / n_tokens


def to_device(batch, device):
    out = dict(batch)
    for k in ("input_ids", "targets", "images"):
        if torch.is_tensor(out[k]):
            out[k] = out[k].to(device)
    return out


# -----------------------------------------------------------------------------
# 2. Training steps

def bench_train(tok, name, stage, steps, warmup, peak_gflops, device, amp_dtype, check_flops=True):
    model = random_vlm(tok, name, device=device).train()
    freeze_sam = stage == 2
    if freeze_sam:
        model.encoder.sam.requires_grad_(False)  # Stage 2: SAM + neck + compressor frozen
    optimizers = recipe_optimizers(model, stage)
    batches = [to_device(b, device) for b in training_batches(model, tok, warmup + steps, stage)]
    amp_ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    out = {}
    if check_flops:  # the analytic count against torch's own, on the first batch (math attention: see flops.py)
        counted = flopcount.counted_flops(model, batches[0])
        analytic = flopcount.batch_flops(model, batches[0], freeze_sam)["total"]
        model.zero_grad(set_to_none=True)
        out["flops_check"] = dict(analytic=analytic, flop_counter=counted, ratio=round(analytic / counted, 4))
    sps, tps, mfu, mfu_now, step_s, flops_sample, share = [], [], [], [], [], [], []
    # the probe multiplies in the training dtype, at a size on the plateau of flops.matmul_peak's sweep
    # (fp32 is flat from 512 on; AMX bf16 reaches it at 1024)
    probe_n = 1024 if amp_dtype == torch.bfloat16 else 512
    probe = [torch.randn(probe_n, probe_n, device=device, dtype=amp_dtype or torch.float32) for _ in range(3)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i, batch in enumerate(batches):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(model, optimizers, batch, amp_ctx)
        sync()
        dt = time.perf_counter() - t0
        if i < warmup:
            continue
        share.append((time.process_time() - c0) / (dt * torch.get_num_threads()))
        B, T = batch["input_ids"].shape
        counts = flopcount.batch_flops(model, batch, freeze_sam)
        f = counts["total"]
        if "gflops_by_part" not in out:  # where the work is, per sample (first timed batch)
            out["gflops_by_part"] = {k: round(v / B / 1e9, 4) for k, v in counts.items() if k not in ("total", "forward")}
        step_s.append(dt)
        sps.append(B / dt)
        tps.append(B * T / dt)
        mfu.append(f / dt / (peak_gflops * 1e9))
        flops_sample.append(f / B)
        # the machine's limit right now: shared hosts drift (neighbours on the same physical cores
        # slow the FMA units while this process stays on its CPU), so also divide by a peak taken
        # right after each step
        runs = []
        for _ in range(5):
            sync()
            t1 = time.perf_counter()
            torch.mm(probe[0], probe[1], out=probe[2])
            sync()
            runs.append(2 * probe_n ** 3 / (time.perf_counter() - t1))
        mfu_now.append(f / dt / statistics.median(runs))
    n_params = sum(p.numel() for p in model.parameters())
    out.update(samples_per_s=summary(sps), tokens_per_s=summary(tps), mfu=summary(mfu), mfu_vs_peak_now=summary(mfu_now),
               step_ms=summary(step_s, 1000),
               gflops_per_sample=round(statistics.mean(flops_sample) / 1e9, 3), params_m=round(n_params / 1e6, 2),
               cpu_share=round(statistics.median(share), 3), batch=BATCH, optimizers=[type(o).__name__ for o in optimizers],
               mean_T=round(statistics.mean(b["input_ids"].shape[1] for b in batches[warmup:]), 1))
    return out


# -----------------------------------------------------------------------------
# 5. Renderer and data pipeline against the training step

def bench_render(tok, encoder_config, chunks, per_chunk, train_samples_per_s):
    from nanoocr.synth import render
    from nanoocr.vision_dataloader import vision_data_generator
    from tasks.sources import synth_source
    for i in range(20):  # warm-up: fonts load and glyph caches fill on first use
        render(0, 10_000_000 + i, "line", "train", height=STRIP[0], width=STRIP[1])
    render_rate, k = [], 0
    for _ in range(chunks):
        t0 = time.perf_counter()
        for _ in range(per_chunk):
            render(0, k, "line", "train", height=STRIP[0], width=STRIP[1])
            k += 1
        render_rate.append(per_chunk / (time.perf_counter() - t0))
    # the whole preparation the training loop waits for (num_workers=0): render, resize + normalise,
    # tokenize, pad and stack -- batches of the training size
    gen = vision_data_generator(synth_source("train", "line", 1, mode=STRIP), tok, encoder_config, BATCH, SEQ_LEN,
                                STRIP, seed=1, log=lambda *a: None)
    next(gen)
    pipe_rate = []
    for _ in range(max(1, chunks * per_chunk // BATCH)):
        t0 = time.perf_counter()
        next(gen)
        pipe_rate.append(BATCH / (time.perf_counter() - t0))
    out = dict(render_images_per_s=summary(render_rate), pipeline_samples_per_s=summary(pipe_rate))
    if train_samples_per_s:
        out.update(train_samples_per_s=train_samples_per_s,
                   ratio=statistics.median(render_rate) / train_samples_per_s,
                   pipeline_ratio=statistics.median(pipe_rate) / train_samples_per_s)
    return out


# -----------------------------------------------------------------------------
# Profiles (--profile): where the time of the weak numbers goes

def profile_sections(tok, device, amp_dtype, row_limit=18):
    import numpy as np
    from PIL import Image
    from torch.profiler import ProfilerActivity, profile

    from nanoocr.engine import generate, preprocess
    model = random_vlm(tok, "cpu", device=device).train()
    optimizers = recipe_optimizers(model, 1)
    batches = [to_device(b, device) for b in training_batches(model, tok, 3, 1)]
    amp_ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    train_step(model, optimizers, batches[0], amp_ctx)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[1:]:
            train_step(model, optimizers, b, amp_ctx)
    print("\n== profile: 2 training steps, the CPU recipe's model (self CPU time) ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))
    net = random_vlm(tok, "cpu", seq_len=512).eval()
    never_end(net, tok)
    view = preprocess(net, Image.fromarray(np.random.default_rng(0).integers(0, 256, STRIP + (3,), dtype=np.uint8)), STRIP)
    generate(net, tok, [view], max_tokens=8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(net, tok, [view], max_tokens=64)
    print("\n== profile: cached generation, 64 tokens (self CPU time) ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))


# -----------------------------------------------------------------------------
# Report

def print_report(r):
    print("\n== nanoocr bench ==")
    m = r["machine"]
    print(f"{m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), {m['threads']} torch thread(s), torch {m['torch']}; "
          f"load average {r['loadavg_start'][0]:.2f} at start, {r['loadavg_end'][0]:.2f} at end")
    rows = []
    if "matmul_peak_gflops" in r:
        p = r["matmul_peak_gflops"]
        rows.append(("matmul peak fp32, GFLOP/s", f"{fmt(p['fp32'])} at N={p['fp32']['best_n']}"
                     + (f"; {fmt(p['fp32_at_end'])} at the end" if "fp32_at_end" in p else "")))
        rows.append(("matmul peak bf16, GFLOP/s", fmt(p["bf16"]) if p.get("bf16") else p.get("bf16_skipped", "-")))
    for key in r.get("train_samples_per_s", {}):
        t = r["train"][key]
        rows.append((f"train {key}, batches made beforehand: samples/s | tokens/s | MFU % of {r.get('mfu_of', '?')}",
                     f"{fmt(t['samples_per_s'])} | {fmt(t['tokens_per_s'], 0)} | "
                     f"{fmt({k: 100 * v if k != 'n' else v for k, v in t['mfu'].items()})} "
                     f"[vs the peak right after each step {fmt({k: 100 * v if k != 'n' else v for k, v in t['mfu_vs_peak_now'].items()})}] "
                     f"({'+'.join(t['optimizers'])}, {t['gflops_per_sample']} GFLOP/sample, {t['params_m']}M params"
                     + (f", analytic/FlopCounter {t['flops_check']['ratio']}" if "flops_check" in t else "") + ")"))
    # the section modules import this one, so they are imported here, when it has finished loading
    if r.get("encoder_vs_reference"):
        rows += bench_encoder.report_rows(r["encoder_vs_reference"])
    rows += bench_generate.report_rows(r)
    rv = r.get("render_vs_train")
    if rv:
        rows.append(("renderer images/s | pipeline samples/s", f"{fmt(rv['render_images_per_s'])} | {fmt(rv['pipeline_samples_per_s'])}"))
        if "ratio" in rv:
            rows.append(("renderer / training consumption", f"{rv['ratio']:.1f}x (pipeline {rv['pipeline_ratio']:.1f}x)"))
    for name, mem in r.get("peak_rss_mb", {}).items():
        rows.append((f"peak RSS, {name}", f"{mem['peak_mb']:.0f} MB" + ("" if mem["reset"] else " (process peak)")))
    width = max(len(a) for a, _ in rows) if rows else 0
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nanoocr bench", description="speed benchmarks on this machine (see the module docstring)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes (~40 seconds)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core)")
    parser.add_argument("--only", default="", help="comma-separated parts: " + ",".join(PARTS))
    parser.add_argument("--model", default="", help="a trained checkpoint / export directory for the generate and "
                        "latency parts (default: a random model of the CPU recipe's shape)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables of a training step and of generation")
    parser.add_argument("--device", default="", help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="training autocast, as the training scripts' --dtype (auto: bf16 on CUDA and on CPUs "
                             "with native bf16); MFU divides by the matmul peak in this dtype")
    parser.add_argument("--malloc", default="tuned", choices=["tuned", "default"],
                        help="tuned: keep freed memory in the process, as every CPU entry point does (common.tune_malloc); "
                             "default: glibc's own (whose adaptive thresholds this run's big matmul buffers then raise)")
    args = parser.parse_args(argv)
    malloc_tuned = tune_malloc() if args.malloc == "tuned" else False
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:  # a usage error, not a bug: argparse's message and exit status 2
        parser.error(f"--only: unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp_dtype = autocast_dtype(args.dtype, device.type)
    q = args.quick
    t_start = time.time()
    r = dict(quick=q, loadavg_start=list(os.getloadavg()), machine=dict(machine_info(threads), malloc_tuned=malloc_tuned))
    print(f"nanoocr bench{' --quick' if q else ''}: {r['machine']['cpu']}, {threads} thread(s), "
          f"load average {r['loadavg_start'][0]:.2f}", flush=True)
    rss = r["peak_rss_mb"] = {}
    secs = r["section_s"] = {}  # wall seconds of each measurement (what --quick / the full run cost)

    def measured(name, fn):
        """fn(), with its peak resident memory and wall seconds recorded under name."""
        with PeakRSS() as mem:
            value = fn()
        rss[name], secs[name] = mem.result, mem.seconds
        return value

    # 1. the peak, in fp32 always and in bf16 where the hardware multiplies it natively: the trainer's
    # own measurement (flops.matmul_peak), so the two MFUs divide by the same thing
    peak = None
    if parts & {"matmul", "train"}:
        def peaks():
            res = {"fp32": matmul_peak(device, torch.float32)}
            if device.type == "cuda" or cpu_has_fast_bf16() or amp_dtype == torch.bfloat16:
                res["bf16"] = matmul_peak(device, torch.bfloat16)
            else:
                res["bf16_skipped"] = "skipped: this CPU has no native bf16 (no avx512_bf16 / amx_bf16); its bf16 matmuls are emulated and far slower than fp32"
            return res
        res = r["matmul_peak_gflops"] = measured("matmul peak", peaks)
        # what MFU means here: model FLOPs / time / this peak (the trainer's: a GPU's datasheet, else measured)
        peak_fps, r["mfu_source"] = peak_flops(device.type, amp_dtype or torch.float32,
                                               measured=res["bf16" if amp_dtype == torch.bfloat16 else "fp32"])
        peak = peak_fps / 1e9
        r["mfu_of"] = f"{format_flops(peak_fps)} {dtype_label(amp_dtype, device.type)}"
        print(f"MFU below is of {r['mfu_of']} ({r['mfu_source']}; training dtype {dtype_label(amp_dtype, device.type)})",
              flush=True)
        print(f"matmul peak fp32 {res['fp32']['gflops']:.1f} GFLOP/s (N={res['fp32']['best_n']})", flush=True)

    tok = bench_tokenizer() if parts & {"train", "generate", "latency", "render"} or args.profile else None

    # 2. training steps, on batches rendered beforehand (the trainer's progress line also says how
    # much of its time goes to waiting for data: its "without it" MFU is this one)
    if "train" in parts:
        r["train"] = {}
        runs = [("cpu", 1), ("cpu", 2), ("cpu2x", 1)] + ([] if q else [("cpu2x", 2)])
        for name, stage in runs:
            key = f"{name}/stage{stage}"
            steps, warmup = (3, 1) if q else (10, 2)
            if name == "cpu2x" and q:
                steps = 2
            t = r["train"][key] = measured(f"train {key}", lambda: bench_train(tok, name, stage, steps, warmup, peak,
                                                                               device, amp_dtype))
            print(f"train {key}: {t['samples_per_s']['median']:.1f} samples/s, mfu {100 * t['mfu']['median']:.1f}% of {r['mfu_of']} "
                  f"(data made beforehand), FLOP check {t['flops_check']['ratio']}", flush=True)
        r["train_samples_per_s"] = {k: v["samples_per_s"] for k, v in r["train"].items()}
        r["train_tokens_per_s"] = {k: v["tokens_per_s"] for k, v in r["train"].items()}
        r["train_mfu"] = {k: v["mfu"] for k, v in r["train"].items()}

    # 3. encoder against the reference, forward and forward + backward (scripts/bench_encoder.py;
    # imported here, so transformers is imported only when this part runs)
    if "encoder" in parts:
        shapes = {"strips 16x3x32x256": (16, 3, 32, 256)}
        if not q:
            shapes["base 4x3x256x256"] = (4, 3, 256, 256)
        r["encoder_vs_reference"] = measured("encoder vs reference", lambda: bench_encoder.bench_encoder(
            shapes, runs=3 if q else 10, warmup=1 if q else 2))
        print("encoder vs reference: done", flush=True)

    # 4. generation: the CPU recipe's line strips, and (full run) a base-mode page, whose 273 image
    # placeholders are what the naive loop re-encodes and re-runs for every token
    if parts & {"generate", "latency"}:
        r["generation_model"] = args.model or "random, the CPU recipe's shape"
    if "generate" in parts:
        r["generation_cache_speedup"] = {}
        modes = [("32x256", STRIP, 2)] + ([] if q else [("base", "base", 1)])
        for label, mode, naive_runs in modes:
            g = r["generation_cache_speedup"][label] = measured(f"generation {label}", lambda: bench_generate.bench_generate(
                tok, mode, new_tokens=64 if q else 256, cached_runs=3 if q else 5, naive_runs=1 if q else naive_runs,
                model_dir=args.model))
            print(f"generation {label}: cached {g['speedup']:.1f}x naive", flush=True)

    # 5. renderer against the training step
    if "render" in parts:
        train_sps = r["train"]["cpu/stage1"]["samples_per_s"]["median"] if "train" in r else None
        r["render_vs_train"] = measured("renderer + pipeline", lambda: bench_render(
            tok, DeepEncoderConfig(**model_sizes("cpu")["encoder"]), chunks=3 if q else 5, per_chunk=40 if q else 100,
            train_samples_per_s=train_sps))

    # 6. per-image reading latency against Tesseract on rendered line strips
    if "latency" in parts:
        lat = r["latency"] = measured("latency", lambda: bench_generate.bench_latency(tok, 4 if q else 20, model_dir=args.model))
        tess = f", Tesseract {lat['tesseract']['ms_per_image']:.0f}" if "tesseract" in lat else f"; {lat['tesseract_skipped']}"
        print(f"latency: model {lat['model_ms_per_image']:.0f} ms/image{tess}", flush=True)

    if args.profile:
        profile_sections(tok, device, amp_dtype)
    if "matmul_peak_gflops" in r:  # the same peak again: how far the machine drifted during the run
        best = r["matmul_peak_gflops"]["fp32"]["best_n"]
        r["matmul_peak_gflops"]["fp32_at_end"] = matmul_peak(device, torch.float32, (best,), 3)
    r["loadavg_end"] = list(os.getloadavg())
    r["wall_s"] = round(time.time() - t_start, 1)
    print_report(r)
    print(f"wall time {r['wall_s']:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
