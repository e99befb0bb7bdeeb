"""
Checkpoints in nanochat's format, crash-safe:

    <checkpoint_dir>/model_{step:06d}.pt          state dict (rank 0)
    <checkpoint_dir>/optim_{step:06d}_rank{r}.pt  optimiser (+ loop) state of each rank
    <checkpoint_dir>/meta_{step:06d}.json         model_config, user_config, step, metrics, loop state

Every file is written to a temp name, fsynced and renamed into place, the directory fsynced, and
meta_ is written LAST: it is the commit marker. A step without its meta (a run killed mid-save, or
a machine that lost power before the data reached the disk) does not exist for the loaders, so the
previous complete checkpoint is what resumes.

Every file is loaded as data: torch.load(weights_only=True) for model and optimiser files (tensors,
dicts, lists, numbers, strings -- nothing that runs code), safetensors for exports, and the
tokenizer through tokenizer.py's data-only reader. A file that would run code is refused.
"""

import glob
import json
import os
import pickle
import re
import time

import torch
import torch.distributed as dist
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from nanoocr.common import get_base_dir, print0
from nanoocr.gpt import GPT, GPTConfig, padded_vocab
from nanoocr.model import vlm_from_config
from nanoocr.tokenizer import Tokenizer


class CheckpointError(ValueError):
    pass


def _fsync_path(path):
    """Flush a written file (or a directory's entries, after a rename into it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is then as durable as it gets
        pass
    finally:
        os.close(fd)


def _atomic_torch_save(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    _fsync_path(tmp)
    os.replace(tmp, path)


def _atomic_json_save(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(os.path.dirname(os.path.abspath(path)))


def save_checkpoint(checkpoint_dir, step, model_data, optimizer_data, meta_data, rank=0):
    """Collective under DDP: every rank writes its optimiser shard; rank 0 writes the model and,
    once all ranks are done, the meta file that makes the step visible."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    if rank == 0:
        _atomic_torch_save(model_data, os.path.join(checkpoint_dir, f"model_{step:06d}.pt"))
    if optimizer_data is not None:
        _atomic_torch_save(optimizer_data, os.path.join(checkpoint_dir, f"optim_{step:06d}_rank{rank}.pt"))
    # Test hook ("STEP:SECONDS"): pause between the data files and the commit marker of that step,
    # so a test can SIGKILL the process exactly mid-save.
    hook = os.environ.get("NANOOCR_TEST_PAUSE_BEFORE_META", "")
    if hook and int(hook.split(":")[0]) == step:
        print0(f"[test hook] pausing before writing meta_{step:06d}.json", flush=True)
        time.sleep(float(hook.split(":")[1]))
    _fsync_path(checkpoint_dir)  # the data files' names are on disk before the meta that commits them
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if rank == 0:
        _atomic_json_save(meta_data, os.path.join(checkpoint_dir, f"meta_{step:06d}.json"))
        print0(f"saved checkpoint step {step} to {checkpoint_dir}")


def load_file(path, device="cpu"):
    """torch.load(weights_only=True) with an error that names the file when it is missing, truncated,
    foreign, or would run code. Model files are tensors; optimiser files are tensors, dicts, lists,
    numbers and strings (optimiser state, the loader's position, the torch RNG state), so both load
    as data: PyTorch's weights_only unpickler refuses any other object before building it."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only's refusal: the file names a callable
        raise CheckpointError(f"{path}: refused: the file holds objects other than tensors and plain data, "
                              f"and loading it would run code ({str(e).splitlines()[0][:300]}). nanoocr never "
                              f"writes such files; load checkpoints only from sources you trust.") from e
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e}). "
                              f"The file is truncated or not a checkpoint: delete it, or its meta_*.json, "
                              f"to fall back to an earlier step.") from e


def load_meta(checkpoint_dir, step):
    path = os.path.join(checkpoint_dir, f"meta_{step:06d}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint's meta ({e})") from e


def load_checkpoint(checkpoint_dir, step=None, device="cpu", load_optimizer=False, rank=0):
    """(model_data, optimizer_data or None, meta) for a committed step (default: the last)."""
    step = find_last_step(checkpoint_dir) if step is None else step
    meta = load_meta(checkpoint_dir, step)
    model_data = load_file(os.path.join(checkpoint_dir, f"model_{step:06d}.pt"), device)
    optim_data = None
    if load_optimizer:
        optim_data = load_file(os.path.join(checkpoint_dir, f"optim_{step:06d}_rank{rank}.pt"), device)
    return model_data, optim_data, meta


def committed_steps(checkpoint_dir):
    """Steps whose meta file exists (and whose model file exists): the only ones that count."""
    steps = []
    for path in glob.glob(os.path.join(checkpoint_dir, "meta_*.json")):
        m = re.fullmatch(r"meta_(\d+)\.json", os.path.basename(path))
        if m and os.path.isfile(os.path.join(checkpoint_dir, f"model_{m.group(1)}.pt")):
            steps.append(int(m.group(1)))
    return sorted(steps)


def find_last_step(checkpoint_dir):
    steps = committed_steps(checkpoint_dir)
    if not steps:
        raise CheckpointError(f"no complete checkpoint (model_*.pt with its meta_*.json) in {checkpoint_dir}")
    return steps[-1]


def strip_compile_prefix(state_dict):
    """torch.compile wraps the module as `_orig_mod`; its keys carry that prefix."""
    return {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}


def check_gpt_state_dict(config, state_dict, path):
    """Compare a GPT state dict against the config from its meta and name the field that is off,
    instead of letting load_state_dict print a wall of shapes."""
    problems = []
    head_dim = config.n_embd // config.n_head
    wte = state_dict.get("transformer.wte.weight")
    if wte is None:
        raise CheckpointError(f"{path}: no transformer.wte.weight — not a nanochat/nanoocr GPT state dict")
    if wte.shape[1] != config.n_embd:
        problems.append(f"n_embd={config.n_embd} but transformer.wte.weight is {list(wte.shape)}")
    if wte.shape[0] not in (config.vocab_size, padded_vocab(config.vocab_size)):
        problems.append(f"vocab_size={config.vocab_size} but transformer.wte.weight has {wte.shape[0]} rows")
    layers = {int(m.group(1)) for k in state_dict for m in [re.match(r"transformer\.h\.(\d+)\.", k)] if m}
    if len(layers) != config.n_layer:
        problems.append(f"n_layer={config.n_layer} but the weights have {len(layers)} blocks")
    ck = state_dict.get("transformer.h.0.attn.c_k.weight")
    if ck is not None and ck.shape[0] != config.n_kv_head * head_dim:
        problems.append(f"n_kv_head={config.n_kv_head} (head_dim {head_dim}) but c_k.weight is {list(ck.shape)}")
    cq = state_dict.get("transformer.h.0.attn.c_q.weight")
    if cq is not None and cq.shape[0] != config.n_head * head_dim:
        problems.append(f"n_head={config.n_head} but c_q.weight is {list(cq.shape)}")
    if problems:
        raise CheckpointError(f"{path}: the model_config in its meta does not match the weights: " + "; ".join(problems))


def pad_vocab_rows(state_dict, config):
    """Checkpoints may store wte / lm_head unpadded; pad them to the multiple of 64 we build."""
    target = padded_vocab(config.vocab_size)
    for key in ("transformer.wte.weight", "lm_head.weight"):
        w = state_dict.get(key)
        if w is not None and w.shape[0] < target:
            state_dict[key] = torch.cat([w, w.new_zeros(target - w.shape[0], w.shape[1])])
    return state_dict


def gpt_from_state_dict(model_config, state_dict, path, device="cpu"):
    """Build a GPT from a meta's model_config dict and load its weights (fp32), checking shapes."""
    known = set(GPTConfig.__dataclass_fields__)
    unknown = sorted(set(model_config) - known)
    if unknown:
        raise CheckpointError(f"{path}: model_config has fields this GPT does not know: {unknown} "
                              f"(supported: {sorted(known)}) — a newer nanochat layout?")
    config = GPTConfig(**model_config)
    state_dict = strip_compile_prefix(state_dict)
    check_gpt_state_dict(config, state_dict, path)
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    state_dict = pad_vocab_rows(state_dict, config)
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device=device)
    model.init_rotary()
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
    return model


def load_nanochat_gpt(checkpoint_dir, tokenizer_dir, step=None, device="cpu"):
    """A nanochat base checkpoint + tokenizer -> (GPT, Tokenizer, meta), with <|image|> appended to
    the tokenizer when missing and the GPT's vocabulary grown to match (old rows bit-identical)."""
    step = find_last_step(checkpoint_dir) if step is None else step
    meta = load_meta(checkpoint_dir, step)
    model_path = os.path.join(checkpoint_dir, f"model_{step:06d}.pt")
    if "model_config" not in meta:
        raise CheckpointError(f"{checkpoint_dir}/meta_{step:06d}.json has no model_config")
    model = gpt_from_state_dict(meta["model_config"], load_file(model_path, device), model_path, device)
    tokenizer = Tokenizer.from_directory(tokenizer_dir)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        model.grow_vocab(tokenizer.get_vocab_size())
    assert tokenizer.get_vocab_size() == model.config.vocab_size, \
        f"tokenizer has {tokenizer.get_vocab_size()} ids but the GPT's vocab_size is {model.config.vocab_size}"
    return model, tokenizer, meta


def checkpoint_dir_for(phase, tag, base_dir=None):
    """<base>/<phase>_checkpoints/<tag> — e.g. vis_tok_checkpoints/cpu (base: get_base_dir())."""
    return os.path.join(base_dir or get_base_dir(), f"{phase}_checkpoints", tag)


# -----------------------------------------------------------------------------
# The VLM (DeepEncoder + GPT): our own checkpoints carry their tokenizer, so a checkpoint
# directory alone is enough to read images with it.

def save_tokenizer_once(checkpoint_dir, tokenizer):
    """The run's tokenizer beside its checkpoints (tokenizer.json, what loading reads, + nanochat's
    pickles). Once per directory: a resumed run keeps it; a fresh run into a used tag has had it
    deleted first (vis_tok_train's --overwrite), so weights never sit beside another run's tokenizer."""
    tok_dir = os.path.join(checkpoint_dir, "tokenizer")
    if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        tokenizer.save(tok_dir)


def load_checkpoint_model(checkpoint_dir, step=None, device="cpu"):
    """A trained VLM checkpoint directory -> (model in eval mode, tokenizer, meta). load_model
    (below) takes an export directory too."""
    step = find_last_step(checkpoint_dir) if step is None else step
    meta = load_meta(checkpoint_dir, step)
    config = meta.get("model_config", {})
    if not {"encoder", "gpt", "image_token_id"} <= set(config):
        raise CheckpointError(f"{checkpoint_dir}/meta_{step:06d}.json is not a nanoocr VLM checkpoint "
                              f"(model_config lacks encoder/gpt/image_token_id); for a nanochat GPT use load_nanochat_gpt")
    path = os.path.join(checkpoint_dir, f"model_{step:06d}.pt")
    state_dict = strip_compile_prefix(load_file(path, device))
    user = meta.get("user_config", {})
    legacy_ctc = os.path.join(checkpoint_dir, f"optim_{step:06d}_rank0.pt")
    if "ctc" not in config and user.get("ctc_weight", 0) > 0 and os.path.isfile(legacy_ctc):
        # checkpoints from before the CTC head was part of the model kept it beside the optimiser state
        optim = load_file(legacy_ctc, device)
        if "ctc_head" in optim:
            state_dict.update({f"ctc_head.{k}": v for k, v in optim["ctc_head"].items()})
            config = dict(config, ctc={"features": user.get("ctc_features", "neck")})
            meta = dict(meta, model_config=config)
    model = vlm_from_config(config, device)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model_config in its meta: {e}") from e
    tokenizer = Tokenizer.from_directory(os.path.join(checkpoint_dir, "tokenizer"))
    assert tokenizer.image_id == model.image_token_id, \
        f"{checkpoint_dir}: tokenizer's <|image|> id {tokenizer.image_id} != model's {model.image_token_id}"
    return model.eval(), tokenizer, meta


class NoModelError(RuntimeError):
    pass


def find_model(model_dir=None):
    """model_dir if given (a checkpoint or an export directory), else the newest trained checkpoint
    under the base dir; with none, an error that says how to get one."""
    if model_dir:
        if not os.path.isdir(model_dir):
            raise NoModelError(f"{model_dir}: no such model directory (a checkpoint directory with "
                               f"model_*.pt + meta_*.json, or an export with config.json + model.safetensors)")
        return model_dir
    found = find_latest_model_dir()
    if found is None:
        raise NoModelError(f"no trained model under {get_base_dir()} (looked for */*_checkpoints/*/meta_*.json). "
                           f"Train one with `nanoocr train --preset=cpu` (or `bash speedrun.sh`), "
                           f"or pass --model DIR (a checkpoint or `nanoocr export` directory).")
    return found


def find_latest_model_dir(base_dir=None):
    """The most recently written checkpoint directory under <base>/*_checkpoints/*/ (or None)."""
    base_dir = base_dir or get_base_dir()
    best, best_time = None, -1.0
    for meta in glob.glob(os.path.join(base_dir, "*_checkpoints", "*", "meta_*.json")):
        t = os.path.getmtime(meta)
        if t > best_time:
            best, best_time = os.path.dirname(meta), t
    return best


# -----------------------------------------------------------------------------
# Exports (`nanoocr export`): a self-contained directory for sharing and serving a trained VLM,
#
#     <dir>/config.json        {"format": "nanoocr-export", "format_version", "model_config", "user_config", "step"}
#     <dir>/model.safetensors  the state dict (safetensors: no pickle, loads without running code)
#     <dir>/tokenizer/         tokenizer.json (plain data; no pickle in an export)
#
# config.json is written last, so like meta_*.json it marks a complete export; re-exporting into
# the same directory removes the old config.json first, so no reader ever sees new weights under an
# old config (or the reverse). load_model below
# accepts an export directory wherever it accepts a checkpoint directory (read, eval, training's
# init_from), so nothing downstream needs to know which one it was given.

EXPORT_FORMAT = "nanoocr-export"
EXPORT_FORMAT_VERSION = 1


def is_export_dir(path, interrupted_too=False):
    """A complete export (config.json and model.safetensors). interrupted_too: also a directory that
    holds nothing but an export's files without its config.json -- an export that stopped midway,
    which exporting again may replace."""
    if os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "model.safetensors")):
        return True
    names = os.listdir(path) if interrupted_too and os.path.isdir(path) else []
    return bool(names) and all(n == "tokenizer" or n.startswith(("config.json", "model.safetensors")) for n in names)


def save_export(out_dir, model, tokenizer, meta, dtype=None):
    """Write model + tokenizer + config to out_dir (see above). dtype: e.g. torch.bfloat16 to halve
    the file (floating tensors only; loading casts back to the model's fp32)."""
    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, "config.json")
    if os.path.exists(config_path):  # un-commit the old export before replacing any of its files
        os.remove(config_path)
        _fsync_path(out_dir)
    state_dict = {}
    for k, v in strip_compile_prefix(model.state_dict()).items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state_dict[k] = v.contiguous()
    weights = os.path.join(out_dir, "model.safetensors")
    save_safetensors(state_dict, weights + ".tmp", metadata={"format": "pt"})
    _fsync_path(weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    tok_dir = os.path.join(out_dir, "tokenizer")
    for stale in ("tokenizer.pkl", "token_bytes.pt"):  # an older export's pickles: data only now
        if os.path.exists(os.path.join(tok_dir, stale)):
            os.remove(os.path.join(tok_dir, stale))
    tokenizer.save(tok_dir, pickles=False)
    _fsync_path(os.path.join(tok_dir, "tokenizer.json"))
    _fsync_path(out_dir)
    config = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
              "model_config": meta["model_config"], "user_config": meta.get("user_config", {}),
              "step": meta.get("step")}
    _atomic_json_save(config, config_path)
    return out_dir


def load_export(export_dir, device="cpu"):
    """An export directory -> (model in eval mode, tokenizer, meta) like load_model; the meta is
    config.json (model_config, user_config, step) with "export": True."""
    path = os.path.join(export_dir, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the export's config ({e})") from e
    if config.get("format") != EXPORT_FORMAT or "model_config" not in config:
        raise CheckpointError(f"{path}: not a nanoocr export (expected \"format\": \"{EXPORT_FORMAT}\" and a model_config)")
    if config.get("format_version", 0) > EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: export format version {config['format_version']} is newer than this "
                              f"nanoocr understands ({EXPORT_FORMAT_VERSION}); upgrade nanoocr")
    weights = os.path.join(export_dir, "model.safetensors")
    try:
        state_dict = load_safetensors(weights, device="cpu")
    except Exception as e:
        raise CheckpointError(f"{weights}: cannot be read as safetensors ({type(e).__name__}: {e})") from e
    model = vlm_from_config(config["model_config"], device)
    try:
        model.load_state_dict(state_dict, strict=True)  # copies (and casts bf16 exports) into fp32
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not fit the model_config in config.json: {e}") from e
    tokenizer = Tokenizer.from_directory(os.path.join(export_dir, "tokenizer"))
    assert tokenizer.image_id == model.image_token_id, \
        f"{export_dir}: tokenizer's <|image|> id {tokenizer.image_id} != model's {model.image_token_id}"
    meta = {"model_config": config["model_config"], "user_config": config.get("user_config", {}),
            "step": config.get("step"), "export": True}
    return model.eval(), tokenizer, meta


def load_model(checkpoint_dir, step=None, device="cpu"):
    """A trained VLM checkpoint directory or an export directory -> (model in eval mode, tokenizer, meta)."""
    if is_export_dir(checkpoint_dir):
        assert step is None, f"{checkpoint_dir} is an export (one set of weights): it has no steps to choose from"
        return load_export(checkpoint_dir, device)
    return load_checkpoint_model(checkpoint_dir, step, device)
