"""
Convert a dataset in any format a tasks/ reader understands into the project's own format:

    OUT/images/000000_<id>.png|jpg
    OUT/data.jsonl   one {"id", "image": "images/...", "prompt": "<image>\\n...", "answer", "source"} a line

which tasks/ocr_json.py reads and training takes as --data. This is the path from a downloaded
dataset (parquet shards of olmOCR-mix / FineVision, a folder of scans with transcripts, Fox,
OmniDocBench) to training.

    python -m scripts.prepare_data --source=parquet --input=shards/ --out=data/olmocr --limit=500 \\
        --image_col=image --text_col=text
    python -m scripts.prepare_data --source=folder --input=scans/ --out=data/scans --prompt="Free OCR."

Sources: json / jsonl (the project's format), folder, parquet, fox, omnidocbench.
PNG and JPEG images are copied byte for byte (no re-encoding loss); any other format is decoded and
saved as PNG, and one that cannot be decoded is a counted skip. Bad records (missing image, empty
answer) are counted skips named on stderr; --strict=1 makes the first one fatal.
"""

import json
import os
import re
import shutil
import time

from tqdm import tqdm

from nanoocr.configurator import configure
from tasks import common
from tasks.sources import SOURCE_KINDS as _SOURCES
from tasks.sources import open_source

# -----------------------------------------------------------------------------
# config (override with --key=value)
source = ""         # json | jsonl | folder | parquet | fox | omnidocbench
input = ""          # the dataset file, folder, parquet file/folder/glob
out = ""            # output directory
limit = -1          # stop after this many written samples (-1: all)
image_col = "image"  # parquet: image column (bytes, HF Image struct, or path)
text_col = "text"   # parquet: answer column (string, or FineVision's turn list)
prompt_col = ""     # parquet: prompt column ("" = none)
id_col = ""         # parquet: id column ("" = file:row)
prompt = ""         # replace every sample's prompt with this ("" = keep the source's / its default)
image_dir = ""      # fox / omnidocbench: where the images are ("" = the format's default)
strict = False      # stop at the first bad record instead of counting it
overwrite = False   # replace an existing OUT/data.jsonl
max_pixels = 64_000_000  # images converted here are decoded: larger ones are skipped (a decompression-bomb
                         # guard, image_process.DEFAULT_MAX_PIXELS); raise it for huge scans you trust
# -----------------------------------------------------------------------------

_PNG, _JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def _safe_name(text, maxlen=60):
    """An id made safe for a file name (ids can be paths, contain ':' or spaces). An image extension
    in the id (folder and Fox ids are file names) is dropped: save_image adds the real one."""
    root, ext = os.path.splitext(text)
    if ext.lower() in common.IMAGE_EXTS:
        text = root
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:maxlen] or "sample"


def save_image(image, dst_stem, max_pixels=64_000_000):
    """Write a sample's image as dst_stem + .png/.jpg and return that path. PNG/JPEG go through
    untouched; anything else (webp, bmp, tiff, ...) is decoded and written as PNG, so the output
    folder holds only the two formats every loader reads. Raises ValueError / OSError when the data
    is not a decodable image, or one of more than max_pixels pixels."""
    if isinstance(image, str):
        ext = os.path.splitext(image)[1].lower()
        if ext in (".png", ".jpg", ".jpeg"):
            dst = dst_stem + (".png" if ext == ".png" else ".jpg")
            shutil.copyfile(image, dst)
            return dst
        with open(image, "rb") as f:
            image = f.read()
    if image.startswith(_PNG) or image.startswith(_JPEG):
        dst = dst_stem + (".png" if image.startswith(_PNG) else ".jpg")
        with open(dst, "wb") as f:
            f.write(image)
        return dst
    # the dataloader's own loader, so conversion sees exactly what training would (EXIF rotation,
    # RGB, a clear ImageError for corrupt data); imported here because it pulls in torch
    from nanoocr.image_process import load_image
    dst = dst_stem + ".png"
    load_image(image, max_pixels=max_pixels, name=os.path.basename(dst_stem)).save(dst, format="PNG")
    return dst


def prepare(source, input, out, limit=-1, image_col="image", text_col="text", prompt_col="", id_col="",
            prompt="", image_dir="", strict=False, overwrite=False, max_pixels=64_000_000):
    """Convert; returns a summary dict {"written", "skipped": {reason: n}, "out", "seconds"}."""
    assert source in _SOURCES, f"--source must be one of {', '.join(_SOURCES)}, got {source!r}"
    assert input, "--input=PATH is required (the dataset file, folder or parquet glob)"
    assert out, "--out=DIR is required"
    jsonl = os.path.join(out, "data.jsonl")
    if os.path.exists(jsonl) and not overwrite:
        raise FileExistsError(f"{jsonl} exists; pass --overwrite=1 to replace it or pick another --out")
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    # a shell passes --prompt="<image>\nFree OCR." with a literal backslash-n; prompts never mean that
    override = common.split_prompt(prompt.replace("\\n", "\n")) if prompt else None
    skips = common.new_skips()
    t0 = time.time()
    written = 0
    tmp = jsonl + ".tmp"  # renamed at the end: a crashed run never leaves a plausible-looking data.jsonl
    with open(tmp, "w", encoding="utf-8") as f, \
            tqdm(total=limit if limit > 0 else None, unit="sample", desc=f"{source} -> {out}") as bar:
        for sample in open_source(source, input, image_col, text_col, prompt_col, id_col, image_dir, strict, skips):
            if override is not None:
                sample.pop("prompt_before", None)
                sample["prompt"] = override[1]
                if override[0].strip():
                    sample["prompt_before"] = override[0]
            stem = os.path.join(out, "images", f"{written:06d}_{_safe_name(sample['id'])}")
            try:
                path = save_image(sample["image"], stem, max_pixels)
            except (OSError, ValueError) as e:  # image_process.ImageError is a ValueError
                common.skip(skips, strict, f"{sample['id']} ({sample['image'] if isinstance(sample['image'], str) else 'bytes'})",
                            "unreadable_image", str(e))
                continue
            rec = {"id": sample["id"], "image": os.path.relpath(path, out).replace(os.sep, "/"),
                   "prompt": common.join_prompt(sample), "answer": sample["answer"], "source": sample["source"]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            written += 1
            bar.update(1)
            if skips:
                bar.set_postfix(skipped=sum(skips.values()), refresh=False)
            if 0 < limit <= written:
                break  # before pulling another record, so nothing past the limit is read or logged
    os.replace(tmp, jsonl)
    summary = {"written": written, "skipped": dict(skips), "out": jsonl, "seconds": round(time.time() - t0, 2)}
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(skips.items())) or "none"
    print(f"wrote {written} samples to {jsonl} (images in {os.path.join(out, 'images')}); "
          f"skipped {sum(skips.values())} ({skipped}) in {summary['seconds']:.1f}s")
    return summary


if __name__ == "__main__":
    config = configure(globals())
    config.pop("preset", None)
    prepare(**config)
