"""
The one `--data` grammar, for the trainer, `eval` and `sample` alike, and the sources it names.

    --data=ITEM[,ITEM...]        a comma-separated list; each ITEM is NAME[:ARG][:WEIGHT]
    NAME  synth                  the built-in renderer (ARG: one renderer kind, "line" / "page" / ...;
                                 none = the run's synth_kinds)
          realistic:ROW          a user-like test set of tasks/realistic.py (ARG required: the row)
          prose                  real book passages in held-out fonts (tasks/prose.py)
          tier1                  a dataset bundled with the package (NAMED below)
          PATH                   a .json / .jsonl / .parquet (or glob) / folder, format detected
    WEIGHT                       a number > 0 (default 1): the item's share of a training mixture

    synth   synth:3,a.json:1   synth:page:2,synth:line:1   a.json,scans/   realistic:photos

A path that exists is taken whole, colons and all. The trainer draws from a weighted mixture of
its items (realistic / prose are test sets only); `eval` and `sample` take every item's samples in
turn (a weight only shapes training, so it is accepted there and has no effect).

A source is a picklable function index -> {image, prompt, answer, id} (so dataloader workers can
call it); finite datasets are reshuffled every epoch by records_source. Readers (tasks/*.py)
stream records; here they are collected into lists — only paths and text, images stay on disk
(parquet image bytes are the exception and are held in memory, which is why each dataset is read
once per start-up and its records shared by the train, curriculum and val sources).
"""

import functools
import json
import os
import random

from nanoocr.image_process import load_image
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.vision_dataloader import records_source, sample_name
from tasks import fox, image_folder, ocr_json, omnidocbench, parquet
from tasks.common import join_prompt

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
# The --data grammar

BUILTIN = ("synth", "realistic", "prose")  # names that are not datasets on disk


def _weight(text):
    try:
        return float(text)
    except ValueError:
        return None


def parse_data(data):
    """A --data string -> [(name, arg, weight)] (the module docstring's grammar). Raises ValueError
    naming the item for an empty item, a weight <= 0, a missing realistic row, an unknown renderer
    kind, or an ARG on a name that takes none."""
    items = []
    for item in data.split(","):
        item = item.strip()
        name, arg, weight = item, "", 1.0
        if not item:
            raise ValueError(f"--data={data!r}: an empty item (two commas, or a comma at an end)")
        if not os.path.exists(item):
            head, sep, tail = item.rpartition(":")
            if sep and _weight(tail) is not None:  # a trailing number is the weight
                name, weight = head, _weight(tail)
            if not os.path.exists(name) and name.partition(":")[0] in BUILTIN:
                name, _, arg = name.partition(":")
        if weight <= 0:
            raise ValueError(f"--data={data!r}: item {item!r} has weight {weight:g}; a weight is a number > 0")
        if name == "realistic" and not arg:
            from tasks.realistic import ROWS
            raise ValueError(f"--data=realistic needs a row: --data=realistic:ROW, ROW one of {', '.join(ROWS)}")
        if name == "synth" and arg:
            from nanoocr.synth import KINDS
            if arg not in KINDS:
                raise ValueError(f"--data={data!r}: {arg!r} is not a renderer kind; synth:KIND with KIND one of "
                                 f"{', '.join(KINDS)} (a weight is a number: synth:2)")
        if name == "prose" and arg:
            raise ValueError(f"--data={data!r}: prose takes no argument (got {item!r})")
        items.append((name, arg, weight))
    return items


def uses_synth(data):
    """Whether a --data string draws from the renderer (so the run's fonts must ship)."""
    return bool(data) and any(name == "synth" for name, _, _ in parse_data(data))


# -----------------------------------------------------------------------------
# Evaluation samples: eval and sample read every item in turn

def sample_prompt(sample, override=""):
    """The user turn's text for a sample (override, when given, for every sample): the <image>
    marker goes where the dataset put it (dev/design.md §3)."""
    if override:
        return override
    return join_prompt(sample) if sample.get("prompt_before") else (sample.get("prompt") or DEFAULT_PROMPT)


def load_pil(sample):
    """A sample's image decoded as the model reads it (image_process.load_image); an ImageError names
    the sample's file, else its id."""
    return load_image(sample["image"], name=sample_name(sample))


def _dataset_samples(path, kind, image_dir, limit):
    path = resolve(path)  # a bundled set's name ("tier1") -> its file
    if not os.path.exists(path) and "*" not in path:
        raise FileNotFoundError(f"--data: {path} does not exist")
    kind = kind or detect_kind(path)
    samples = []
    for s in open_source(kind, path, image_dir=image_dir):
        samples.append(s)
        if 0 < limit <= len(samples):
            break
    if not samples:
        raise ValueError(f"{path}: no usable samples (see the skip messages above)")
    return samples, f"{path} ({kind})"


def _item_samples(name, arg, source, image_dir, split, limit, user_config, mode):
    if name == "synth":
        n = limit if limit > 0 else 64  # the renderer never runs out: take a fixed-size sample
        kinds = arg or user_config.get("synth_kinds") or "line"
        src = synth_source(split, kinds, seed=int(user_config.get("seed", 0)), mode=mode,
                           **synth_options(**user_config))
        return [src(i) for i in range(n)], f"synth:{kinds} ({split})"
    if name == "realistic":
        from tasks import realistic
        samples = realistic.realistic_samples(arg, limit)
        return samples, f"realistic:{arg} ({len(samples)} of {realistic.SIZES[arg]} images)"
    if name == "prose":
        from tasks.prose import prose_samples
        samples = prose_samples(limit)
        return samples, f"prose ({len(samples)} paragraphs, unseen fonts)"
    return _dataset_samples(name, source, image_dir, limit)


def open_samples(data, source="", image_dir="", split="val", limit=-1, user_config=None, mode=None):
    """A --data value -> (list of samples {id, image, prompt, answer, ...}, description), every
    item's samples in turn, at most `limit` from each (synth: 64 when no limit). data "" means the
    model's own validation data (its training config's val_data, else data); source forces a
    dataset format; mode is the fixed (H, W) a strip model's renderer samples are drawn at."""
    user_config = user_config or {}
    if not data:
        data = user_config.get("val_data") or user_config.get("data") or ""
        if not data:
            raise ValueError("no --data given and the model's training config names no data; pass --data=PATH")
    samples, descs = [], []
    for name, arg, _ in parse_data(data):
        got, desc = _item_samples(name, arg, source, image_dir, split, limit, user_config, mode)
        samples += got
        descs.append(desc)
    return samples, " + ".join(descs)


# -----------------------------------------------------------------------------
# The renderer as a source

def _synth_sample(split, kinds, weights, seed, height, width, options, boxes, index):
    from nanoocr.synth import render, render_annotated
    kind = random.Random(f"kind:{seed}:{split}:{index}").choices(kinds, weights)[0]
    sample_id = f"synth-{split}-{kind}-{index}"
    if boxes and not (kind == "line" and options.get("cut_p")):  # (a line the cutter cuts has no boxes: render() only)
        img, prompt, answer, info = render_annotated(seed, index, kind, split, height=height, width=width, **options)
        return {"image": img, "prompt": prompt, "answer": answer, "id": sample_id, "boxes": info["boxes"]}
    img, prompt, answer = render(seed, index, kind, split, height=height, width=width, **options)
    return {"image": img, "prompt": prompt, "answer": answer, "id": sample_id}


def synth_source(split, kinds="line", seed=0, mode=None, boxes=False, **options):
    """index -> a rendered sample. kinds: "line" or "line:3,page:1". With a fixed (H, W) mode the
    renderer draws at exactly that size (no resampling); otherwise at each kind's default size.
    boxes: samples of the page kinds carry their glyph boxes ("boxes", for the cell CTC loss)."""
    pairs = [k.split(":") for k in kinds.split(",")]
    names = [p[0] for p in pairs]
    weights = [float(p[1]) if len(p) > 1 else 1.0 for p in pairs]
    height, width = mode if isinstance(mode, tuple) else (None, None)
    return functools.partial(_synth_sample, split, names, weights, seed, height, width, options, boxes)


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


def _dataset_records(name, loaded):
    """A dataset's records, read from disk once per `loaded` dict (one start-up)."""
    if name not in loaded:
        loaded[name] = load_records(name)
    return loaded[name]


def build_source(data, split, seed=0, synth_kinds="line", mode=None, synth_options=None, loaded=None, boxes=False):
    """A --data string -> index -> sample function for one split (datasets ignore the split).
    loaded: {path: records} shared between calls, so each dataset is read once. boxes: the
    renderer's page samples carry glyph boxes (synth_source)."""
    loaded = {} if loaded is None else loaded
    parts = []
    for name, arg, weight in parse_data(data):
        if name == "synth":
            src = synth_source(split, arg or synth_kinds, seed, mode, boxes, **(synth_options or {}))
        elif name in BUILTIN:
            raise ValueError(f"--data: {name} is a test set for `nanoocr eval` / `sample`, not training data")
        else:
            src = records_source(_dataset_records(name, loaded), seed=seed)
        parts.append((src, weight))
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
                     easy_samples=0, n_val_records=64, boxes=False):
    """(train source, val source, text source for mixing, a list of val samples with decoded images
    under "image_pil" for greedy-decoding checks). With easy_samples > 0 the first easy_samples
    training samples are rendered clean in easy_fonts only (a curriculum: reading starts sooner on
    a few clean fonts, then widens to every font and degradation)."""
    options = synth_options(synth_text_mix, synth_fonts, synth_degrade, synth_max_words, synth_cut_p, synth_cut_degrade)
    loaded = {}  # each dataset is read once, its records shared by every source below
    train = build_source(data, "train", seed, synth_kinds, mode, options, loaded, boxes)
    if easy_samples > 0:
        easy = build_source(data, "train", seed, synth_kinds, mode,
                            dict(options, degrade="none", **({"fonts": easy_fonts.split(",")} if easy_fonts else {})),
                            loaded, boxes)
        train = curriculum_source(easy, train, easy_samples)
    val_spec = val_data or data
    val = build_source(val_spec, "val", seed, synth_kinds, mode, options, loaded, boxes)
    if not uses_synth(val_spec):
        records = _dataset_records(parse_data(val_spec)[0][0], loaded)[:n_val_records]
        val_records = [dict(r, image_pil=load_image(r["image"], name=r["image"] if isinstance(r["image"], str) else r["id"]))
                       for r in records]
    else:
        val_records = [dict(r, image_pil=r["image"]) for r in map(val, range(n_val_records))]
    return train, val, synth_text_source("train", seed), val_records
