"""
Train the vision-language model. Stage 1 (this script's defaults): everything trainable, vision
samples only. Stage 2 is this loop with `stage = 2`, which every Stage 2 preset sets (presets/mid.toml,
and NAME_mid.toml = NAME + mid + its own lines): SAM + neck + convs frozen, a step LR schedule and
text mixing (dev/design.md §5). `nanoocr mid-train` is this script with --preset=mid --stage=2 first.

    python -m scripts.vis_tok_train --preset=cpu                      # the CPU recipe, Stage 1
    python -m scripts.vis_tok_train --preset=cpu_mid                  # ... and its Stage 2
    python -m scripts.vis_tok_train --preset=tier1                    # overfit the original 10 images
    python -m scripts.vis_tok_train --data=my.jsonl --mode=base ...   # your data
    torchrun --standalone --nproc_per_node=8 -m scripts.vis_tok_train --preset=full

The loss is the mean over the answer tokens of the whole global batch: each step prefetches
its micro-batches, all-reduces their answer-token count, and backpropagates sum-losses divided
by that count, so 2 ranks x B equals 1 rank x 2B exactly (dev/design.md §3). Checkpoints go to
<base>/<stage dir>/<tag>/ in the crash-safe format; --resume=True continues bit-exactly
(model, optimiser, schedule, data stream, RNG). Ctrl-C saves a checkpoint before exiting.
"""

import hashlib
import math
import os
import re
import shutil
import signal
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from nanoocr.checkpoint_manager import (
    CheckpointError,
    checkpoint_dir_for,
    committed_steps,
    find_last_step,
    load_checkpoint,
    load_nanochat_gpt,
    save_checkpoint,
    save_tokenizer_once,
)
from nanoocr.common import (
    autocast_dtype,
    batch_plan,
    compute_cleanup,
    compute_init,
    get_base_dir,
    get_wandb,
    print0,
)
from nanoocr.configurator import configure
from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
from nanoocr.diagnostics import encoder_collapse, loss_and_gap
from nanoocr.flops import batch_flops, dtype_label, format_flops, peak_flops
from nanoocr.gpt import GPTConfig
from nanoocr.model import build_vlm
from nanoocr.modes import parse_mode, train_modes
from nanoocr.tokenizer import Tokenizer
from nanoocr.typefaces import check_fonts, font_manifest
from nanoocr.vision_dataloader import vision_data_generator
from tasks.sources import training_sources, uses_synth

# -----------------------------------------------------------------------------
# config (override with --key=value, or --preset=NAME for presets/NAME.toml)
run = "dummy"               # wandb run name ("dummy": no wandb)
device_type = ""            # cuda | mps | cpu ("" = autodetect)
stage = 1                   # 1: vis_tok (all trainable); 2: vis_mid (presets/mid.toml and every NAME_mid.toml set it)
tag = "default"             # checkpoint directory name under <base>/vis_tok_checkpoints/ (or vis_mid_)
seed = 42
# model
encoder_size = "cpu"        # DeepEncoder size: cpu | gpu | full (deepencoder.ENCODER_SIZES)
gpt_depth = 3               # GPT layers
gpt_n_embd = 0              # GPT width (0 = the encoder preset's projector width)
gpt_n_head = 4
seq_len = 256               # max tokens per row (image placeholders + prompt + answer)
proj_std = 0.02             # init std of the GPT's residual output projections (0 = nanochat's zero init)
# initialisation
init_from = ""              # a nanoocr checkpoint dir to start from ("stage1" = this tag's Stage 1 result)
encoder_weights = ""        # comma-separated safetensors: HF SAM / HF CLIP / DeepSeek-OCR / UnlimitedOcr
nanochat_dir = ""           # a nanochat base checkpoint dir (with nanochat_tokenizer) to start the GPT from
nanochat_tokenizer = ""
tokenizer_dir = ""          # "" = <base>/tokenizer (ignored with nanochat_dir or init_from)
tokenizer_vocab = 0         # > 0: the tokenizer must have this many ids, as tok_train's vocab_size (a full-size run must not
                            # pick up the speedrun's 512-id tokenizer from the same base dir); 0 = any
require_weights = False     # the preset is meant to start from real weights (presets/full.toml): without
from_scratch = False        # --encoder_weights and --nanochat_dir it stops, unless --from_scratch=True
# data
data = "synth"              # "synth" (the built-in renderer) or comma-separated dataset files / folders
synth_kinds = "line"        # renderer kinds with weights, e.g. "line:3,page:1"
synth_text_mix = -1.0       # renderer: fraction of random-string lines (-1 = the renderer's default)
synth_fonts = ""            # renderer: comma-separated font names / families to draw from ("" = all fonts)
synth_degrade = ""          # renderer: "" = the split's degradation preset, "none" = clean
synth_max_words = 0         # renderer: most words per line (0 = the renderer's default)
synth_cut_p = 0.0           # renderer: chance a line is drawn larger and cut back by the reader's cutter (synth.render)
synth_cut_degrade = ""      # renderer: degradations of those cut lines ("" = synth_degrade)
easy_steps = 0              # curriculum: the first easy_steps steps render clean text in easy_fonts only
easy_fonts = ""             # comma-separated fonts for the curriculum's easy phase ("" = all fonts, clean)
val_data = ""               # "" = the renderer's val split (synth) or the training data itself
mode = "32x256"             # resolution mode: tiny | small | base | large | gundam, or HxW (fixed strips);
                            # several, comma-separated ("base,large,small,tiny"), draw one per batch (the first is the reader's default)
text_ratio = 0.0            # fraction of text-only rows (Stage 2 mixes 0.1)
num_workers = 0             # data-preparation processes (0 = in the training process)
# optimisation
device_batch_size = 16      # rows per forward/backward on one device
total_batch_size = 16       # rows per optimiser step over all ranks (gradient accumulation fills the rest)
num_steps = 1000
lr_encoder = 1e-3           # SAM + neck + convs + CLIP
lr_projector = 1e-3         # projector + image_newline + view_separator
lr_gpt = 1e-3
weight_decay = 0.01
matrix_lr = 0.0             # > 0: Muon (nanochat's optimiser for matrices) at this lr for the GPT blocks' linear weights
muon_encoder = False        # ... and for the encoder's + projector's linear weights too (conv kernels stay AdamW)
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0             # 0 = off
schedule = "cosine"         # cosine | constant | step (after warmup)
warmup_steps = 100
final_lr_frac = 0.1         # cosine: end at this fraction of the peak
step_size = 2000            # step: multiply by step_gamma every step_size steps
step_gamma = 0.1
encoder_freeze_steps = 0    # keep the encoder + projector lr at 0 for these first steps (CPU recipe) ...
encoder_rewarmup = 100      # ... then re-warm it up over this many steps
ctc_weight = 0.0            # auxiliary CTC loss (nanoocr/ctc.py; 0 = off) ...
ctc_features = "neck"       # ... read off the SAM neck map or the projected "tokens" the GPT reads (one-line strips),
                            # or "cells": each projected token spells its cell's characters (pages of the renderer)
ctc_decoder = "joint"       # how `nanoocr read` reads a model with a CTC head by default: joint | gpt | ctc
                            # (nanoocr/joint_decode.py; choose on validation images, dev/tune_joint.py)
freeze_sam = False          # freeze SAM + neck + convs (Stage 2)
dtype = "auto"              # autocast: auto (bf16 on CUDA / CPUs with native bf16, else fp32) | bfloat16 | float32
compile = False             # torch.compile the model (no gain measured on CPU)
# evaluation, logging, checkpoints
log_every = 10
eval_every = 200            # 0 = only at the end
eval_batches = 2            # val batches for loss / ablation gap
cer_samples = 16            # greedy-decoded val samples for CER (0 = off)
max_new_tokens = 64
save_every = 500            # 0 = only at the end
resume = False              # continue from the last checkpoint of this tag
overwrite = False           # a fresh run (no resume) into a tag that holds checkpoints: delete them first
final_samples = 0           # at the end print EXPECTED vs GENERATED for this many val samples ...
final_label = "final"       # ... and "<final_label>: K/N exact"
time_limit_min = 0.0        # stop (and save) after this many minutes (0 = no limit)
stop_after = 0              # stop (and save) after this step as if interrupted; --resume continues (0 = off)
config = configure(globals())
# -----------------------------------------------------------------------------

is_ddp, rank, local_rank, world_size, device = compute_init(device_type, seed)
device_type = device.type
master = rank == 0
phase = "vis_tok" if stage == 1 else "vis_mid"
checkpoint_dir = checkpoint_dir_for(phase, tag)
amp_dtype = autocast_dtype(dtype, device_type)
autocast_ctx = torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
# total_batch_size = rows per optimiser step over all ranks, for any world size: rounded up to a
# multiple of the ranks, device_batch_size lowered to a divisor of the per-rank rows (common.batch_plan).
# The adjusted values replace the asked ones everywhere below (CTC normalisation, curriculum length)
# and in the checkpoint's config, which then says what ran.
plan = batch_plan(total_batch_size, device_batch_size, world_size)
for note in plan["notes"]:
    print0(f"batch: {note}")
total_batch_size, device_batch_size, grad_accum_steps = plan["total"], plan["device"], plan["accum"]
config.update(total_batch_size=total_batch_size, device_batch_size=device_batch_size)


def _has_checkpoint(d):
    try:
        return bool(committed_steps(d))
    except (CheckpointError, OSError):
        return False


# A fresh run into a tag that already holds checkpoints would overwrite some steps and leave later ones,
# which find_last_step then picks (read and --resume would get the old model), beside the old
# tokenizer. So it stops, unless told to continue (--resume) or to start over (--overwrite).
_tag_files = sorted(f for f in (os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else [])
                    if re.fullmatch(r"(model|meta|optim)_\d+.*|tokenizer", f))
if _tag_files and not resume:
    if not overwrite:
        sys.exit(f"vis_tok_train: {checkpoint_dir} already holds a run ({len(_tag_files)} files, e.g. "
                 f"{_tag_files[-1]}). Pass --resume=True to continue it, --overwrite=True to delete its checkpoints "
                 f"and start over, or another --tag")
    if master:
        for f in _tag_files:
            path = os.path.join(checkpoint_dir, f)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        print0(f"--overwrite: deleted {len(_tag_files)} files of the earlier run in {checkpoint_dir}")
    if is_ddp:
        dist.barrier()  # no rank looks at the directory before it is empty

# Stage 2 continues a Stage 1 model (its meta and checkpoints say Stage 2): from random weights it would
# be a Stage 1 run filed under the wrong name, e.g. `nanoocr mid-train --preset=cpu` (a Stage 1 preset).
if stage == 2 and not init_from:
    sys.exit(f"vis_tok_train: Stage 2 continues a Stage 1 model, but init_from is empty (preset "
             f"{config.get('preset', 'none')!r}). Use a Stage 2 preset, --preset=NAME_mid (presets/cpu_mid.toml, "
             f"gpu_mid, full_mid; mid for the published defaults), or pass --init_from=stage1 or a checkpoint dir.")

# (runs/full.sh always passes --resume=True, so only a checkpoint that exists to resume from skips the check)
if require_weights and not from_scratch and not init_from and not (resume and _has_checkpoint(checkpoint_dir)):
    missing = [f for f, v in (("--encoder_weights", encoder_weights), ("--nanochat_dir", nanochat_dir)) if not v]
    if missing:
        sys.exit(f"vis_tok_train: this preset (tag {tag!r}) is meant to start from real weights, and "
                 f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. Pass "
                 "--encoder_weights=sam-vit-base/model.safetensors,clip-vit-large-patch14/model.safetensors "
                 "(HF facebook/sam-vit-base + openai/clip-vit-large-patch14; or DeepSeek-OCR's own "
                 "model-00001-of-000001.safetensors) and --nanochat_dir=~/.cache/nanochat/base_checkpoints/d20 "
                 "--nanochat_tokenizer=~/.cache/nanochat/tokenizer (a nanochat base checkpoint: model_*.pt + "
                 "meta_*.json); or --from_scratch=True to train every weight from random init (needs far more "
                 "steps than the preset's to read)")
wandb_run = get_wandb(run, config=config)

# -----------------------------------------------------------------------------
# Model and tokenizer

def build_model():
    """(model, tokenizer, meta of the checkpoint it started from or None)."""
    from nanoocr.checkpoint_manager import load_model
    if init_from:
        src = checkpoint_dir_for("vis_tok", tag) if init_from == "stage1" else init_from
        model, tok, meta = load_model(src, device=device)
        print0(f"initialised from {src} (step {meta.get('step')})")
        return model.train(), tok, meta
    enc_cfg = DeepEncoderConfig(**ENCODER_SIZES[encoder_size])
    if nanochat_dir:
        gpt, tok, _ = load_nanochat_gpt(nanochat_dir, nanochat_tokenizer or os.path.join(nanochat_dir, "..", "..", "tokenizer"), device=device)
        enc_cfg.out_dim = gpt.config.n_embd  # the projector maps to the GPT's width
        model = build_vlm(enc_cfg, gpt.config, tok.image_id, device=device, proj_std=proj_std)
        model.gpt.load_state_dict(gpt.state_dict())
        print0(f"GPT from nanochat checkpoint {nanochat_dir}")
    else:
        tok_dir = tokenizer_dir or os.path.join(get_base_dir(), "tokenizer")
        tok = Tokenizer.from_directory(tok_dir)
        # ids as scripts.tok_train --vocab_size counts them (merges + specials + <|image|>)
        if tokenizer_vocab > 0 and tok.get_vocab_size() != tokenizer_vocab:
            sys.exit(f"vis_tok_train: the tokenizer in {tok_dir} has {tok.get_vocab_size()} ids, this run expects "
                     f"{tokenizer_vocab} (tokenizer_vocab): it was trained for another recipe. Train the right "
                     f"one into a fresh base dir (NANOOCR_BASE_DIR=... python -m scripts.tok_train "
                     f"--vocab_size={tokenizer_vocab}) or pass --tokenizer_dir / --tokenizer_vocab deliberately")
        n_embd = gpt_n_embd or enc_cfg.out_dim
        enc_cfg.out_dim = n_embd
        gpt_cfg = GPTConfig(sequence_len=seq_len, vocab_size=tok.get_vocab_size(), n_layer=gpt_depth,
                            n_head=gpt_n_head, n_kv_head=gpt_n_head, n_embd=n_embd)
        model = build_vlm(enc_cfg, gpt_cfg, tok.image_id, device=device, proj_std=proj_std)
    if encoder_weights:
        from nanoocr.encoder_weights import load_encoder_weights
        report = load_encoder_weights(model.encoder, encoder_weights.split(","), verbose=master)
        print0(f"encoder weights: layouts {report['layouts']}, {len(report['loaded'])} tensors loaded, "
               f"freshly initialised: {sorted(report['fresh']) or 'none'}, {len(report['ignored'])} keys ignored")
    return model.train(), tok, None


model, tokenizer, init_meta = build_model()
if freeze_sam:  # Stage 2: SAM + neck + convs keep their Stage 1 features
    model.encoder.sam.requires_grad_(False)
mode_values = [parse_mode(m) for m in train_modes(mode)]
mode_value = mode_values[0]  # the mode of the greedy CER checks and the strip CTC's grid, and the reader's default

# The CTC head (model.ctc_head, nanoocr/ctc.py) trains on ctc_weight > 0. It is part of the model: a
# Stage 1 model brings its own head into Stage 2, and the head is saved and exported with the weights.
# It reads the neck map or the projected tokens that a forward hook keeps, so the loss rides on the
# model's own forward (and DDP's): no second encoder pass.
ctc_seen = {}
if ctc_weight > 0:
    from nanoocr.ctc import cell_ctc_loss_sum, ctc_loss_sum
    assert ctc_features == "cells" or (len(mode_values) == 1 and isinstance(mode_value, tuple)), \
        f"ctc_weight with ctc_features={ctc_features} needs fixed one-line strips (one mode=HxW), not mode={mode!r}"
    if model.ctc_head is None:
        model.add_ctc_head(ctc_features, ctc_decoder).to(device)
    assert model.ctc_features == ctc_features, (f"the model's CTC head reads {model.ctc_features!r}, this run "
                                                f"asks ctc_features={ctc_features!r}: pass --ctc_features={model.ctc_features}")
    assert ctc_features != "cells" or ctc_decoder == "gpt", \
        "ctc_features=cells trains a page model's tokens and reads nothing: pass --ctc_decoder=gpt (presets/pages_cpu.toml does)"
    if ctc_features == "neck":  # [B, neck, H/p, W/p]: one frame per neck column
        model.encoder.sam.register_forward_hook(lambda module, inputs, output: ctc_seen.__setitem__("neck", output[0]))
    else:  # the projector's [B, qh*qw, D]: two frames per (twice as wide) column, or one sequence per token
        model.encoder.projector.register_forward_hook(lambda module, inputs, output: ctc_seen.__setitem__("tokens", output))
ctc_head = model.ctc_head if ctc_weight > 0 else None
if model.ctc_head is not None:
    assert ctc_decoder in ("joint", "gpt", "ctc"), f"ctc_decoder={ctc_decoder!r}: joint | gpt | ctc"
    # saved in the model's config (ctc.decoder), read by reader's default; a cell head reads nothing
    model.ctc_decoder = ctc_decoder if model.ctc_features != "cells" else "gpt"
if ctc_head is None and model.ctc_head is not None:  # a head this run does not train stays as it is
    model.ctc_head.requires_grad_(False)


def ctc_feature_map():
    """The features the last training forward handed to the hook, as a [B, C, h, w] map."""
    from nanoocr.deepencoder import grid_size
    feats = dict(ctc_seen, grid=grid_size(raw_model.encoder.config, *mode_value))
    ctc_seen.clear()
    return raw_model.ctc_feature_map(feats)

# -----------------------------------------------------------------------------
# Optimiser: AdamW with one learning rate per component, and Muon for the matrices when matrix_lr > 0
# (VLM.setup_optimizers says which parameter goes where and why).

optimizers = model.setup_optimizers(lr_encoder=lr_encoder, lr_projector=lr_projector, lr_gpt=lr_gpt,
                                    weight_decay=weight_decay, betas=(beta1, beta2), matrix_lr=matrix_lr,
                                    muon_encoder=muon_encoder)
optimizer, muon = optimizers[0], (optimizers[1] if len(optimizers) > 1 else None)
if muon is not None:
    n_mat = sum(len(g["params"]) for g in muon.param_groups)
    print0(f"Muon (lr {matrix_lr}) for {n_mat} matrices of {', '.join(g['part'] for g in muon.param_groups)}; AdamW for the rest")


def lr_multiplier(step, part):
    """Warmup then cosine / constant / step decay; the encoder (and projector) can stay at zero
    for encoder_freeze_steps and re-warm afterwards — the probe's cure for early encoder collapse."""
    if step < warmup_steps:
        m = (step + 1) / warmup_steps
    elif schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, num_steps - warmup_steps))
        m = final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    elif schedule == "step":
        m = step_gamma ** ((step - warmup_steps) // step_size)
    else:
        assert schedule == "constant", f"unknown schedule {schedule!r}: cosine | constant | step"
        m = 1.0
    if part in ("encoder", "projector") and encoder_freeze_steps > 0:
        if step < encoder_freeze_steps:
            return 0.0
        m *= min(1.0, (step - encoder_freeze_steps + 1) / max(1, encoder_rewarmup))
    return m

# -----------------------------------------------------------------------------
# Data

if uses_synth(data) or uses_synth(val_data):  # a named family that does not ship stops here, before any step
    for fonts in (synth_fonts, easy_fonts):
        if fonts:
            check_fonts(fonts.split(","))
    manifest = font_manifest(synth_fonts.split(",") if synth_fonts else None)
    digest = hashlib.sha256("".join(f"{n}:{h}" for n, h in manifest).encode()).hexdigest()[:12]
    print0(f"fonts: {len(manifest)} files, manifest sha256 {digest}: " + ", ".join(f"{n}={h}" for n, h in manifest))
train_source, val_source, text_source, val_records = training_sources(
    data=data, val_data=val_data, synth_kinds=synth_kinds, mode=mode_value, seed=seed,
    synth_text_mix=synth_text_mix, synth_fonts=synth_fonts, synth_degrade=synth_degrade,
    synth_max_words=synth_max_words, synth_cut_p=synth_cut_p, synth_cut_degrade=synth_cut_degrade,
    easy_fonts=easy_fonts, easy_samples=easy_steps * total_batch_size,
    n_val_records=max(cer_samples, final_samples), boxes=ctc_weight > 0 and ctc_features == "cells")
loader_kwargs = dict(tokenizer=tokenizer, encoder_config=model.encoder.config, batch_size=device_batch_size,
                     seq_len=seq_len, mode=mode_values if len(mode_values) > 1 else mode_value)


def train_loader(state=None):
    return vision_data_generator(train_source, rank=rank, world_size=world_size, text_ratio=text_ratio,
                                 get_text=text_source, seed=seed, num_workers=num_workers, state=state,
                                 **loader_kwargs)


def val_batches():
    """The same val batches at every eval (a fresh generator from index 0)."""
    gen = vision_data_generator(val_source, seed=seed + 1, **loader_kwargs)
    return [next(gen)[0] for _ in range(eval_batches)]

# -----------------------------------------------------------------------------
# Resume / init state

step = 0
loader_state = None
ema_loss, history, losses = None, [], []  # losses: [step, train loss] of every step (for plots and tests)
if resume:
    try:
        last = find_last_step(checkpoint_dir)
    except CheckpointError:
        last = None
    if last is None:
        print0(f"--resume: no checkpoint in {checkpoint_dir} yet; starting fresh")
    else:
        model_data, optim_data, meta = load_checkpoint(checkpoint_dir, last, device, load_optimizer=True, rank=rank)
        if "ctc_head" in optim_data:  # checkpoints from before the head was part of the model kept it here
            model_data.update({f"ctc_head.{k}": v for k, v in optim_data["ctc_head"].items()})
        model.load_state_dict(model_data)
        optimizer.load_state_dict(optim_data["optimizer"])
        if muon is not None:
            assert "muon" in optim_data, f"{checkpoint_dir} step {last} was trained without Muon; resume with --matrix_lr=0"
            muon.load_state_dict(optim_data["muon"])
        loader_state = optim_data["loader"]
        torch.set_rng_state(optim_data["rng"]["torch"])
        ema_loss, losses = meta["loop"]["ema_loss"], meta["loop"]["losses"]
        history = meta.get("history", [])
        step = meta["step"]
        print0(f"resumed from {checkpoint_dir} step {step}")
        del model_data, optim_data

raw_model = model
if compile:
    model = torch.compile(model)
if is_ddp:
    from torch.nn.parallel import DistributedDataParallel as DDP
    # text-only micro-batches leave the encoder unused; only then does DDP need to look for it
    if raw_model.ctc_head is not None:  # its loss is computed outside forward: DDP must not wait for it
        DDP._set_params_and_buffers_to_ignore_for_model(
            raw_model, [f"ctc_head.{n}" for n, _ in raw_model.ctc_head.named_parameters()])
    model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None,
                find_unused_parameters=text_ratio > 0)

# -----------------------------------------------------------------------------
# Evaluation

def evaluate():
    """Val loss, image-ablation gap, collapse cosines and greedy CER (rank 0 only)."""
    raw_model.eval()
    batches = val_batches()
    val_loss, gap = loss_and_gap(raw_model, batches, autocast_ctx)
    out = dict(step=step, val_loss=val_loss, ablation_gap=gap)
    imgs = next((b["images"] for b in batches if torch.is_tensor(b["images"]) and len(b["images"]) > 1), None)
    if imgs is not None:
        with autocast_ctx:
            out.update(encoder_collapse(raw_model, imgs))
    if cer_samples > 0:
        out.update(greedy_cer(val_records[:cer_samples]))
    raw_model.train()
    return out


def greedy_read(records, max_tokens):
    """Greedy answers for records with decoded images ("image_pil"), batched: one encoder call per image."""
    from nanoocr.engine import generate, preprocess
    images = [preprocess(raw_model, r["image_pil"], mode_value) for r in records]
    with autocast_ctx:
        outs = generate(raw_model, tokenizer, images, [r["prompt"] for r in records], max_tokens=max_tokens)
    return [o["text"] for o in outs]


def greedy_cer(records):
    from nanoocr.metrics import cer
    preds, refs = greedy_read(records, max_new_tokens), [r["answer"] for r in records]
    return dict(val_cer=cer(preds, refs), distinct_outputs=len(set(preds)), example_pred=preds[0], example_ref=refs[0])


def save(final=False):
    optim_data = dict(optimizer=optimizer.state_dict(), loader=loader_state, rng=dict(torch=torch.get_rng_state()))
    if muon is not None:
        optim_data["muon"] = muon.state_dict()
    meta = dict(model_config=raw_model.config, user_config=config, step=step, stage=stage, mode=mode,
                loop=dict(ema_loss=ema_loss, losses=losses), history=history, final=final,
                val=history[-1] if history else None)
    if master:
        save_tokenizer_once(checkpoint_dir, tokenizer)
    save_checkpoint(checkpoint_dir, step, raw_model.state_dict(), optim_data, meta, rank=rank)

# -----------------------------------------------------------------------------
# The loop

interrupted = False


def on_sigint(signum, frame):
    global interrupted
    if interrupted:
        raise KeyboardInterrupt
    interrupted = True
    print0("\ninterrupt: finishing this step, saving a checkpoint, then exiting (Ctrl-C again to abort)")


signal.signal(signal.SIGINT, on_sigint)
loader = train_loader(loader_state)
n_params = sum(p.numel() for p in raw_model.parameters())
print0(f"model: {n_params / 1e6:.2f}M parameters (encoder {sum(p.numel() for p in raw_model.encoder.parameters()) / 1e6:.2f}M), "
       f"mode {mode}, {grad_accum_steps} micro-batch(es) of {device_batch_size} x {world_size} rank(s) per step")
# MFU says what it divides by: the peak and its dtype (a table for known GPUs; elsewhere the best
# flops.matmul_peak this machine has shown, the number `nanoocr bench` divides by too)
peak, peak_source = peak_flops(device_type, amp_dtype or torch.float32)
peak_label = f"{format_flops(peak)} {dtype_label(amp_dtype, device_type)}"
print0(f"MFU denominator: {peak_label} ({peak_source}); the step time includes waiting for data, "
       f"whose share the progress line prints (`nanoocr bench` times steps on batches made beforehand)")
t_start, t_last, rows_since, tokens_since, flops_since, data_since = time.time(), time.time(), 0, 0, 0.0, 0.0
start_step = step
while step < num_steps:
    # fetch the step's micro-batches first: the global answer-token count normalises the loss
    t_data, micro = time.time(), []
    for _ in range(grad_accum_steps):
        batch, loader_state = next(loader)
        micro.append(batch)
    data_since += time.time() - t_data  # rendering in this process when num_workers=0
    n_tokens = torch.tensor(sum(b["n_answer_tokens"] for b in micro), dtype=torch.float64, device=device)
    if is_ddp:
        dist.all_reduce(n_tokens)
    n_tokens = max(float(n_tokens), 1.0)
    for group in (g for opt in optimizers for g in opt.param_groups):
        group["lr"] = group["initial_lr"] * lr_multiplier(step, group["part"])
    step_loss, step_ctc = 0.0, 0.0
    for i, b in enumerate(micro):
        sync = nullcontext() if (not is_ddp or i == len(micro) - 1) else model.no_sync()
        with sync:
            with autocast_ctx:
                loss_sum = model(b["input_ids"].to(device), targets=b["targets"].to(device),
                                 images=b["images"].to(device) if torch.is_tensor(b["images"]) else b["images"],
                                 loss_reduction="sum")
                loss = loss_sum * world_size / n_tokens  # DDP averages over ranks: x world_size = a global sum
                if ctc_head is not None and ctc_features == "cells" and b["images"] is not None:
                    assert torch.is_tensor(b["images"]) and b["cells"] is not None, \
                        "the cell CTC loss needs same-size renderer pages with glyph boxes in every batch"
                    ctc_sum = cell_ctc_loss_sum(ctc_head, ctc_seen.pop("tokens"), b["cells"])
                    loss = loss + ctc_weight * ctc_sum * world_size / total_batch_size
                    step_ctc += float(ctc_sum.detach()) / total_batch_size
                elif ctc_head is not None and b["images"] is not None:  # (a text-only micro-batch has no neck)
                    assert torch.is_tensor(b["images"]), "ctc_weight needs same-size strips in every batch"
                    ctc_sum = ctc_loss_sum(ctc_head, ctc_feature_map(), b["answers"])
                    loss = loss + ctc_weight * ctc_sum * world_size / total_batch_size
                    step_ctc += float(ctc_sum.detach()) / total_batch_size
            loss.backward()
        step_loss += float(loss_sum.detach())
        rows_since += b["input_ids"].size(0)
        tokens_since += b["input_ids"].numel()
        # analytic model FLOPs (nanoocr/flops.py, checked against FlopCounterMode); Gundam tile lists: n/a
        flops_since += batch_flops(raw_model, b, freeze_sam)["total"] if not isinstance(b["images"], list) else float("nan")
    if ctc_head is not None and is_ddp:  # DDP ignores the head (its loss is outside forward): average by hand
        for p in ctc_head.parameters():
            if p.grad is None:  # only text-only micro-batches on this rank
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world_size
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss_t = torch.tensor(step_loss, dtype=torch.float64, device=device)
    if is_ddp:
        dist.all_reduce(loss_t)
    train_loss = float(loss_t) / n_tokens
    ema_loss = train_loss if ema_loss is None else 0.9 * ema_loss + 0.1 * train_loss
    step += 1
    losses.append([step, train_loss])
    if master and (step % log_every == 0 or step == num_steps):
        dt = time.time() - t_last
        rows_s = rows_since * world_size / dt
        mfu = 100 * flops_since / dt / peak  # per rank: every rank does the same work
        data_pct = 100 * data_since / dt  # the rest of dt is the model's step (what the bench times)
        elapsed = time.time() - t_start
        eta = elapsed / max(1, step - start_step) * (num_steps - step)
        print0(f"step {step:05d}/{num_steps} | loss {train_loss:.4f} (ema {ema_loss:.4f}) | "
               f"lr x{lr_multiplier(step - 1, 'gpt'):.3f} enc x{lr_multiplier(step - 1, 'encoder'):.3f} | "
               + (f"ctc {step_ctc:.3f} | " if ctc_head is not None else "") +
               f"{rows_s:.1f} samples/s | {tokens_since * world_size / dt:,.0f} tok/s | mfu {mfu:.1f}% of {peak_label} | "
               f"data {data_pct:.0f}% of the time (mfu {mfu / max(1e-9, 1 - data_pct / 100):.1f}% without it) | "
               f"{elapsed / 60:.1f}m elapsed, eta {eta / 60:.1f}m", flush=True)
        wandb_run.log(dict(step=step, train_loss=train_loss, ema_loss=ema_loss, samples_per_s=rows_s, mfu=mfu,
                           data_pct=data_pct))
        t_last, rows_since, tokens_since, flops_since, data_since = time.time(), 0, 0, 0.0, 0.0
    time_up = (time_limit_min > 0 and (time.time() - t_start) / 60 >= time_limit_min) or step == stop_after
    last_step = step == num_steps or time_up or interrupted
    t_pause = time.time()  # eval and checkpoint time is left out of the next progress line's rates
    if master and ((eval_every > 0 and step % eval_every == 0) or last_step):
        metrics = evaluate()
        metrics["train_ema_loss"] = ema_loss
        metrics["minutes"] = (time.time() - t_start) / 60
        history.append({k: v for k, v in metrics.items() if not isinstance(v, str)})
        print0("eval | " + " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v!r}"
                                      for k, v in metrics.items() if k != "step"), flush=True)
        wandb_run.log({k: v for k, v in metrics.items() if not isinstance(v, str)})
    if is_ddp:
        dist.barrier()
    if (save_every > 0 and step % save_every == 0) or last_step:
        save(final=step == num_steps)
    t_last += time.time() - t_pause
    if time_up or interrupted:
        print0(f"stopped at step {step} ({'time limit' if time_up else 'interrupt'}); rerun with --resume=True to continue")
        break

if device_type == "cuda":  # what the run needed, for sizing batches (dev/gpu_check.sh prints it)
    print0(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated "
           f"({torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved) on rank 0")
elif sys.platform.startswith("linux"):
    import resource
    print0(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident on rank 0")
if master and final_samples > 0 and step == num_steps:
    records = val_records[:final_samples]
    raw_model.eval()
    preds = greedy_read(records, seq_len)
    for r, out in zip(records, preds):
        print0(f"--- {r.get('id', '')}\nEXPECTED:  {r['answer']!r}\nGENERATED: {out!r}")
    exact = sum(out.strip() == r["answer"].strip() for r, out in zip(records, preds))
    print0(f"{final_label}: {exact}/{len(records)} exact")
wandb_run.finish()
compute_cleanup()
if interrupted:
    sys.exit(130)  # like a shell's Ctrl-C status, so `set -e` pipelines (speedrun.sh) stop here too
