"""
From a `--data=...` string to the indexed sample sources the dataloader needs.

    data = "synth"                           the built-in renderer (train / val splits)
    data = "tier1"                           a dataset bundled with the package (NAMED below)
    data = "a.json,b.jsonl,scans/,x.parquet" datasets, format detected from the path
    data = "a.json:3,synth:1"                a weighted mixture (weights after a colon)

A source is a picklable function index -> {image, prompt, answer, id} (so dataloader workers can
call it); finite datasets are reshuffled every epoch by records_source. Readers (tasks/*.py)
stream records; here they are collected into lists — only paths and text, images stay on disk
(parquet image bytes are the exception and are held in memory).
"""

import os
import json
import random
import functools

from tasks import common, fox, image_folder, ocr_json, omnidocbench, parquet
from nanoocr.vision_dataloader import records_source

SOURCE_KINDS = ("json", "jsonl", "folder", "parquet", "fox", "omnidocbench")

# Datasets that ship inside the package (pyproject.toml package-data), named so a preset or the
# command line works from any directory and from an installed wheel alike. tier1: the original
# project's 10 real images (tasks/tier1/README.md).
NAMED = {"tier1": os.path.join(os.path.dirname(os.path.abspath(__file__)), "tier1", "overfit_dataset.json")}


def resolve(path):
    """A named dataset ("tier1") -> its bundled file; anything else is returned unchanged. An
    existing file or folder of the same name in the working directory wins, so no user data is
    shadowed."""
    return NAMED[path] if path in NAMED and not os.path.exists(path) else path


def open_source(kind, path, image_col="image", text_col="text", prompt_col="", id_col="", image_dir="",
                strict=False, skips=None):
    """The reader for a source kind, as a sample iterator."""
    if kind in ("json", "jsonl"):
        return ocr_json.read(path, strict=strict, skips=skips)
    if kind == "folder":
        return image_folder.read(path, strict=strict, skips=skips)
    if kind == "parquet":
        return parquet.read(path, image_col=image_col, text_col=text_col, prompt_col=prompt_col or None,
                            id_col=id_col or None, strict=strict, skips=skips)
    if kind == "fox":
        return fox.read(path, image_dir=image_dir or None, strict=strict, skips=skips)
    if kind == "omnidocbench":
        return omnidocbench.read(path, image_dir=image_dir or None, strict=strict, skips=skips)
    raise ValueError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")


def detect_kind(path):
    """Guess a dataset's format from its path (and, for .json, its first record)."""
    if os.path.isdir(path):
        has_parquet = any(f.endswith(".parquet") for f in os.listdir(path))
        return "parquet" if has_parquet else "folder"
    if path.endswith(".parquet") or "*" in path:
        return "parquet"
    if path.endswith(".jsonl"):
        return "jsonl"
    if path.endswith(".json"):
        with open(path) as f:
            obj = json.load(f)
        first = obj[0] if isinstance(obj, list) and obj else obj
        if isinstance(first, dict) and "conversations" in first:
            return "fox"
        if isinstance(first, dict) and "layout_dets" in first:
            return "omnidocbench"
        return "json"
    raise ValueError(f"{path}: cannot tell the dataset format (expected .json, .jsonl, .parquet or a folder)")


def load_records(path, strict=False):
    path = resolve(path)
    if not os.path.exists(path) and "*" not in path:
        raise FileNotFoundError(f"--data: {path} does not exist")
    records = list(open_source(detect_kind(path), path, strict=strict))
    if not records:
        raise ValueError(f"{path}: no usable samples (see the skip messages above)")
    return records


# -----------------------------------------------------------------------------
# The renderer as a source

def _synth_sample(split, kinds, weights, seed, height, width, options, index):
    from nanoocr.synth import render
    kind = random.Random(f"kind:{seed}:{split}:{index}").choices(kinds, weights)[0]
    img, prompt, answer = render(seed, index, kind, split, height=height, width=width, **options)
    return {"image": img, "prompt": prompt, "answer": answer, "id": f"synth-{split}-{kind}-{index}"}


def synth_source(split, kinds="line", seed=0, mode=None, **options):
    """index -> a rendered sample. kinds: "line" or "line:3,page:1". With a fixed (H, W) mode the
    renderer draws at exactly that size (no resampling); otherwise at each kind's default size."""
    pairs = [k.split(":") for k in kinds.split(",")]
    names = [p[0] for p in pairs]
    weights = [float(p[1]) if len(p) > 1 else 1.0 for p in pairs]
    height, width = mode if isinstance(mode, tuple) else (None, None)
    return functools.partial(_synth_sample, split, names, weights, seed, height, width, options)


def _synth_text(split, seed, index):
    from nanoocr.synth_text import corpus_iter
    # a short document from the renderer's own text sources, chosen by index
    rng = random.Random(f"text:{seed}:{split}:{index}")
    return next(iter(corpus_iter(max_chars=rng.randint(200, 1200), seed=rng.randrange(1 << 30), split=split)))


def _curriculum(easy, full, first_full_index, index):
    return easy(index) if index < first_full_index else full(index)


def curriculum_source(easy, full, first_full_index):
    """Samples from `easy` below a global index, from `full` from then on (a data curriculum that
    is a pure function of the index, so resume and DDP sharding keep working)."""
    return functools.partial(_curriculum, easy, full, first_full_index)


def synth_text_source(split="train", seed=0):
    return functools.partial(_synth_text, split, seed)


def _mixed(sources, weights, seed, index):
    i = random.Random(f"mix:{seed}:{index}").choices(range(len(sources)), weights)[0]
    return sources[i](index)


def build_source(data, split, seed=0, synth_kinds="line", mode=None, synth_options=None):
    """A --data string -> index -> sample function for one split (datasets ignore the split)."""
    parts = []
    for item in data.split(","):
        name, _, weight = item.partition(":") if not os.path.exists(item) else (item, "", "")
        if name == "synth":
            src = synth_source(split, synth_kinds, seed, mode, **(synth_options or {}))
        else:
            src = records_source(load_records(name), seed=seed)
        parts.append((src, float(weight) if weight else 1.0))
    if len(parts) == 1:
        return parts[0][0]
    return functools.partial(_mixed, [p[0] for p in parts], [p[1] for p in parts], seed)


def synth_options(synth_text_mix=-1.0, synth_fonts="", synth_degrade="", synth_max_words=0, synth_cut_p=0.0,
                  synth_cut_degrade="", **_):
    """The training config's renderer settings -> render() options (also used by eval, so a model
    is tested on the test split of the distribution it was trained on). Extra keys are ignored,
    so a whole user_config can be passed."""
    options = {}
    if synth_text_mix >= 0:
        options["text_mix"] = {"random": synth_text_mix, "prose": (1 - synth_text_mix) * 0.7,
                               "entity": (1 - synth_text_mix) * 0.3}
    if synth_fonts:
        options["fonts"] = synth_fonts.split(",")
    if synth_degrade:
        options["degrade"] = synth_degrade
    if synth_max_words > 0:
        options["max_words"] = synth_max_words
    if synth_cut_p > 0:
        options["cut_p"] = synth_cut_p
    if synth_cut_degrade:
        options["cut_degrade"] = synth_cut_degrade
    return options


def training_sources(data, val_data="", synth_kinds="line", mode=None, seed=0, synth_text_mix=-1.0, synth_fonts="",
                     synth_degrade="", synth_max_words=0, synth_cut_p=0.0, synth_cut_degrade="", easy_fonts="",
                     easy_samples=0, n_val_records=64):
    """(train source, val source, text source for mixing, a list of val samples with decoded images
    under "image_pil" for greedy-decoding checks). With easy_samples > 0 the first easy_samples
    training samples are rendered clean in easy_fonts only (a curriculum: reading starts sooner on
    a few clean fonts, then widens to every font and degradation)."""
    from nanoocr.image_process import load_image
    options = synth_options(synth_text_mix, synth_fonts, synth_degrade, synth_max_words, synth_cut_p, synth_cut_degrade)
    train = build_source(data, "train", seed, synth_kinds, mode, options)
    if easy_samples > 0:
        easy = build_source(data, "train", seed, synth_kinds, mode,
                            dict(options, degrade="none", **({"fonts": easy_fonts.split(",")} if easy_fonts else {})))
        train = curriculum_source(easy, train, easy_samples)
    val_spec = val_data or data
    val = build_source(val_spec, "val", seed, synth_kinds, mode, options)
    if "synth" not in val_spec.split(","):
        records = load_records(val_spec.split(",")[0].partition(":")[0])[:n_val_records]
        val_records = [dict(r, image_pil=load_image(r["image"], name=r["image"] if isinstance(r["image"], str) else r["id"]))
                       for r in records]
    else:
        val_records = [dict(r, image_pil=r["image"]) for r in map(val, range(n_val_records))]
    return train, val, synth_text_source("train", seed), val_records
