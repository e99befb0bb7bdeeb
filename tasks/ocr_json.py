"""
The original project's dataset format, and the one scripts/prepare_data.py writes.

A JSON list (`.json`) or one object per line (`.jsonl`), each record

    {"id": "receipt_000", "image": "images/receipt_000.jpg",
     "prompt": "<image>\\n<|grounding|>OCR this image.", "answer": "...", "source": "SROIE"}

Image paths are relative to the JSON file. "prompt" may be missing (then DEFAULT_PROMPT), "id"
(then file:index) and "source" (then the file's name); other fields (the seed's "type") are ignored.
"""

import json
import os

from nanoocr.modes import DEFAULT_PROMPT
from tasks.common import DataError, make_sample, new_skips, resolve_image, skip


def _records(path):
    """(index, record, where) for each record of a .json list or .jsonl file. The format is told by
    the first character, not the extension, so a misnamed file still reads. A JSONL line that is not
    JSON comes back as its exception so the caller can count it: one bad line must not lose a shard.
    JSONL is streamed line by line; a JSON list is loaded whole (that is what the format allows)."""
    with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a BOM from Windows editors
        head = ""
        while True:
            c = f.read(1)
            if not c or not c.isspace():
                head = c
                break
        f.seek(0)
        if head == "[":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e})") from None
            for i, rec in enumerate(data):
                yield i, rec, f"{path}[{i}]"
            return
        i = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rec = e
            yield i, rec, f"{path}:{lineno}"
            i += 1


def read(path, strict=False, skips=None, source=None):
    """Yield samples from a .json list or .jsonl file (see module docstring)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such dataset file")
    skips = new_skips() if skips is None else skips
    base_dir = os.path.dirname(os.path.abspath(path))
    default_source = source or os.path.basename(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    for i, rec, where in _records(path):
        if not isinstance(rec, dict):
            detail = str(rec) if isinstance(rec, Exception) else f"expected an object, got {type(rec).__name__}"
            skip(skips, strict, where, "bad_record", detail)
            continue
        image = rec.get("image")
        if image is not None and not isinstance(image, str):
            skip(skips, strict, where, "bad_record", f"image must be a path string, got {type(image).__name__}")
            continue
        sample = make_sample(
            sample_id=rec.get("id", f"{stem}:{i}"),
            image=resolve_image(image, base_dir),
            prompt=rec.get("prompt", DEFAULT_PROMPT),
            answer=rec.get("answer"),
            source=source or rec.get("source") or default_source,
            where=where, skips=skips, strict=strict,
        )
        if sample is not None:
            yield sample
