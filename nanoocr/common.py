"""
Small shared utilities: rank-0 printing, the base directory, device autodetection,
distributed init/cleanup (single process or torchrun), seeding, a no-op wandb stand-in, the
compute dtype (autocast_dtype, cpu_has_fast_bf16).
Everything else in the package may import this module; it imports nothing from the package.
"""

import datetime
import os
import random

import numpy as np
import torch
import torch.distributed as dist


def get_dist_info():
    """(is_ddp, rank, local_rank, world_size) from torchrun's environment variables."""
    if all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return True, int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    return False, 0, 0, 1


def is_rank0():
    return get_dist_info()[1] == 0


def print0(*args, **kwargs):
    """print() on rank 0 only, so a torchrun job logs each line once."""
    if is_rank0():
        print(*args, **kwargs)


def get_base_dir():
    """Where tokenizers, checkpoints, data and reports go: $NANOOCR_BASE_DIR or ~/.cache/nanoocr."""
    base = os.environ.get("NANOOCR_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanoocr")
    os.makedirs(base, exist_ok=True)
    return base


def autodetect_device_type():
    """cuda > mps > cpu; $NANOOCR_DEVICE (or a script's --device_type) overrides."""
    forced = os.environ.get("NANOOCR_DEVICE", "")
    if forced:
        return forced
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_cpu_threads(n=None):
    """Pin torch's intra-op threads deliberately: $OMP_NUM_THREADS if set, else the cores we have
    (divided among local ranks under torchrun) — oversubscribing 2 cores makes everything slower."""
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS")
        if env:
            n = int(env)
        else:
            _, _, _, world = get_dist_info()
            n = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    torch.set_num_threads(n)
    tune_malloc()  # every CPU entry point (train, read, eval, serve) sets its threads here
    return n


def tune_malloc():
    """Let the process keep the memory it frees instead of handing it back to the OS (glibc only;
    $NANOOCR_TUNE_MALLOC=0 turns it off). By default glibc unmaps freed blocks over its (adaptive)
    mmap threshold and trims the heap top, so a model's activations are page-faulted in afresh pass
    after pass, which is slow on a VM; keeping it made reading and the encoder faster on a 2-core VM
    (the A/B numbers: dev/LOG.md "Histories moved out of docstrings"). No arithmetic changes (only where memory comes from); RSS stays at its peak instead of
    shrinking between steps. Returns whether it was applied."""
    import sys
    if not sys.platform.startswith("linux") or os.environ.get("NANOOCR_TUNE_MALLOC", "1") == "0":
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        # blocks up to 32 MB (glibc's largest allowed threshold) come from the heap, which is never trimmed
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def compute_init(device_type="", seed=1337):
    """Set up the process: device, threads, seeding, and the process group under torchrun
    (nccl on CUDA, gloo otherwise). Returns (is_ddp, rank, local_rank, world_size, device)."""
    device_type = device_type or autodetect_device_type()
    assert device_type in ("cuda", "mps", "cpu"), f"unknown device_type {device_type!r}; use cuda, mps or cpu"
    if device_type == "cuda":
        assert torch.cuda.is_available(), "device_type=cuda but torch sees no CUDA GPU (is this a CPU build of torch?)"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device_type == "mps":
        assert torch.backends.mps.is_available(), "device_type=mps but MPS is not available"
    is_ddp, rank, local_rank, world_size = get_dist_info()
    if device_type == "cpu":
        set_cpu_threads()
    if is_ddp:
        if device_type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            device = torch.device(device_type)
            dist.init_process_group(backend="gloo", timeout=datetime.timedelta(minutes=10))
        dist.barrier()
    else:
        device = torch.device(device_type)
    seed_everything(seed)  # same seed on every rank: identical model init; data sharding differs by rank
    return is_ddp, rank, local_rank, world_size, device


def compute_cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DummyWandb:
    """Stands in for a wandb run when logging is off, so scripts call .log() unconditionally."""

    def log(self, *args, **kwargs):
        pass

    def finish(self):
        pass


def get_wandb(run_name, project="nanoocr", config=None):
    """A real wandb run when run_name != 'dummy' and wandb is installed, else DummyWandb (opt-in)."""
    if run_name == "dummy" or not is_rank0():
        return DummyWandb()
    try:
        import wandb
    except ImportError:
        print0("wandb is not installed (pip install wandb); logging to the console only")
        return DummyWandb()
    return wandb.init(project=project, name=run_name, config=config)


def batch_plan(total_batch_size, device_batch_size, world_size):
    """How a step's rows are split over ranks and micro-batches, for ANY world size.

    total_batch_size means rows per optimiser step over all ranks; device_batch_size is the most rows
    one forward/backward may take. Every rank must do the same number of micro-batches of the same
    size (DDP all-reduces once per step and the loss divides by a global token count), so:
    - total is rounded UP to the next multiple of world_size (3 GPUs and total 64 -> 66): rounding
      down would silently train on fewer rows than asked, and an error would make runs/full.sh fail
      on 3, 5, 6 or 7 GPUs;
    - the per-rank rows are split into equal micro-batches: device_batch_size is lowered to the
      largest divisor of the per-rank rows that is <= the request (per-rank 22, device 16 -> 11 x 2),
      never raised, so the memory a preset was sized for is never exceeded.
    Returns dict(total, device, accum, per_rank, notes): notes are the lines a script prints when it
    changed what was asked (empty when nothing changed)."""
    for name, v in (("total_batch_size", total_batch_size), ("device_batch_size", device_batch_size),
                    ("world_size", world_size)):
        assert isinstance(v, int) and v >= 1, f"{name} must be a positive integer, got {v!r}"
    notes = []
    total = -(-total_batch_size // world_size) * world_size
    if total != total_batch_size:
        notes.append(f"total_batch_size {total_batch_size} is not a multiple of {world_size} ranks: "
                     f"rounded up to {total} rows per step")
    per_rank = total // world_size
    device = max(d for d in range(1, min(device_batch_size, per_rank) + 1) if per_rank % d == 0)
    if device != device_batch_size:
        notes.append(f"device_batch_size {device_batch_size} -> {device}: the largest divisor of the "
                     f"{per_rank} rows per rank that is <= {device_batch_size}")
    return dict(total=total, device=device, accum=per_rank // device, per_rank=per_rank, notes=notes)


# -----------------------------------------------------------------------------
# The compute dtype (here, not in flops.py, so the reader gets it without the FLOP counter)

def cpu_has_fast_bf16():
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without it, bf16 matmuls
    fall back to an emulated path far slower than fp32 (25x on an AVX2 CPU: dev/LOG.md "bf16 autocast on
    a CPU without native bf16"), so autocast must stay off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(dtype, device_type):
    """Resolve a script's dtype setting ("auto" | "bfloat16" | "float32") to the autocast dtype, or
    None for plain fp32. auto = bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" or (device_type == "cpu" and cpu_has_fast_bf16()) else "float32"
    assert dtype in ("bfloat16", "float32"), f"dtype must be auto, bfloat16 or float32, got {dtype!r}"
    return torch.bfloat16 if dtype == "bfloat16" and device_type != "mps" else None
