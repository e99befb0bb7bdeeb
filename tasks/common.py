"""
What every dataset reader in tasks/ shares: the one sample type, the `<image>` prompt convention,
counted skips of bad records.

A reader is a generator function yielding samples, one dict each:

    {"id": str, "image": str (a resolved path) or bytes (encoded file contents),
     "prompt": str, "answer": str, "source": str}
    (+ "prompt_before": str, only when the prompt had text before its <image> marker)

"prompt" is the text that follows the image. DeepSeek-OCR-style data writes the image as a literal
`<image>` inside the prompt ("<image>\n<|grounding|>OCR this image."): it marks where the run of
<|image|> placeholders goes. Almost always it comes first, so the common case is one field; the rare
prompt with text before the marker keeps that text in "prompt_before" so nothing is lost. The single
newline after the marker is the format's separator (the dataloader writes `{image run}\n{prompt}`,
dev/design.md §3), so it is dropped here rather than kept as part of the prompt.

Readers never decode images: that is the dataloader's job (with nanoocr/image_process.py's error
handling), in background workers. A reader only checks what is cheap and certain: the image file
exists and the answer is not empty. Anything else wrong with a record is a *counted skip* that names
the file, or with strict=True an error — a silently dropped sample is how a dataset quietly shrinks.
"""

import json
import os
import sys
from collections import Counter


def _log0(msg):
    # print0's rule (rank 0 of torchrun) without importing nanoocr.common, which imports torch:
    # 3-4 s that a data-prep run or a reader test has no other use for
    if int(os.environ.get("RANK", "0")) == 0:
        print(msg, file=sys.stderr)


IMAGE_MARKER = "<image>"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_LOGGED_SKIPS = 20  # per skips counter: enough to diagnose, without flooding a log on a bad shard


class DataError(ValueError):
    """A bad record in strict mode, or a source that cannot be read at all."""


def new_skips():
    """A counter of skipped records by reason ("missing_image", "empty_answer", ...). Pass one to
    a reader as skips=... to see what it dropped; readers create their own when given None."""
    return Counter()


def skip(skips, strict, where, reason, detail=""):
    """Count (and log) one skipped record, or raise when strict. `where` names the file (and record)
    so the user can go and fix it."""
    msg = f"{where}: {reason}" + (f" ({detail})" if detail else "")
    if strict:
        raise DataError(msg + " [strict=True; pass strict=False to skip and count such records]")
    skips[reason] += 1
    n = sum(skips.values())
    if n <= MAX_LOGGED_SKIPS:
        _log0(f"skipping {msg}")
    elif n == MAX_LOGGED_SKIPS + 1:
        _log0("(more skipped records are counted but not logged)")


def split_prompt(prompt):
    """'<image>\\nOCR this.' -> ('', 'OCR this.'); 'Look: <image> what?' -> ('Look: ', 'what?');
    a prompt without a marker puts the image first (DeepSeek-OCR's layout). Raises DataError on
    more than one marker (one image per sample)."""
    n = prompt.count(IMAGE_MARKER)
    if n == 0:
        return "", prompt
    if n > 1:
        raise DataError(f"prompt has {n} {IMAGE_MARKER} markers, expected one: {prompt[:80]!r}")
    before, after = prompt.split(IMAGE_MARKER)
    # the whitespace right after the marker is the format's separator, not prompt text
    return before, after.lstrip()


def join_prompt(sample):
    """Inverse of split_prompt, in the project's JSON format: '<image>\\n' + prompt (with any text
    that preceded the image in front). Used when writing data.jsonl and Fox predictions."""
    return sample.get("prompt_before", "") + IMAGE_MARKER + "\n" + sample["prompt"]


def make_sample(sample_id, image, prompt, answer, source, where, skips, strict):
    """Validate one record and build the sample dict, or count a skip and return None.
    `image` is a path (already resolved to where it lives) or the encoded bytes."""
    if not isinstance(answer, str) or not answer.strip():
        skip(skips, strict, where, "empty_answer")
        return None
    if isinstance(image, (bytes, bytearray)):
        if len(image) == 0:
            skip(skips, strict, where, "missing_image", "empty image bytes")
            return None
        image = bytes(image)
    elif not isinstance(image, str) or not image:
        skip(skips, strict, where, "missing_image", "no image field")
        return None
    elif not os.path.isfile(image):
        skip(skips, strict, where, "missing_image", image)
        return None
    if not isinstance(prompt, str):
        skip(skips, strict, where, "bad_prompt", f"prompt is {type(prompt).__name__}")
        return None
    try:
        before, after = split_prompt(prompt)
    except DataError as e:
        skip(skips, strict, where, "bad_prompt", str(e))
        return None
    sample = {"id": str(sample_id), "image": image, "prompt": after, "answer": answer, "source": source}
    if before.strip():
        sample["prompt_before"] = before
    return sample


def json_list_records(path, kind, expected):
    """(where, record) for each record of a JSON file that must hold a list (Fox, OmniDocBench),
    where = "file[index]" for skip messages; a DataError naming the file when it is missing, not
    JSON, or not a list (`expected` says what it should contain)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {kind} JSON file")
    with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a BOM from Windows editors
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {expected}")
    for i, rec in enumerate(data):
        yield f"{path}[{i}]", rec


def resolve_image(image, base_dir):
    """Dataset files name images relative to themselves: resolve against the file's directory
    (an absolute path is kept), so a dataset folder can be moved or mounted anywhere."""
    if not isinstance(image, str) or not image:
        return image
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(image)))
