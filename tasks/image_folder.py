"""
A folder of images with same-stem .txt transcripts, searched recursively:

    pages/a.png  pages/a.txt
    pages/scans/b.jpg  pages/scans/b.txt

The transcript is the answer; the prompt is the same for every image (DEFAULT_PROMPT unless given).
Ids are the images' relative paths ("scans/b.jpg"): unique even when a.png and a.jpg share a.txt,
and stable across machines.
Files are visited in sorted order so the stream (and a mixture built on it) is reproducible.
"""

import os

from nanoocr.modes import DEFAULT_PROMPT
from tasks.common import IMAGE_EXTS, DataError, make_sample, new_skips, skip


def iter_images(root, skipped=None, exts=IMAGE_EXTS):
    """Sorted paths of every image (by extension, case-insensitive; `exts`) under root, recursively. Hidden
    folders and files (".git", ".DS_Store") are left out, and so are other extensions; pass a dict as
    `skipped` to have them counted there: {"hidden": [paths], "extensions": {".txt": n, ...}}
    (`nanoocr read` reports them)."""
    def note(kind, value):
        if skipped is not None:
            if kind == "hidden":
                skipped.setdefault("hidden", []).append(value)
            else:
                exts = skipped.setdefault("extensions", {})
                exts[value] = exts.get(value, 0) + 1

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # os.walk recurses in this list's order: sort it in place for determinism
        for d in dirnames:
            if d.startswith("."):
                note("hidden", os.path.join(dirpath, d))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in sorted(filenames):
            if name.startswith("."):
                note("hidden", os.path.join(dirpath, name))
            elif name.lower().endswith(exts):
                yield os.path.join(dirpath, name)
            else:
                note("ext", os.path.splitext(name)[1].lower() or "(none)")


def read(root, prompt=DEFAULT_PROMPT, strict=False, skips=None, source=None):
    """Yield one sample per image under root that has a non-empty same-stem .txt beside it."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a directory")
    skips = new_skips() if skips is None else skips
    root = os.path.abspath(root)
    source = source or os.path.basename(root.rstrip(os.sep))
    for image in iter_images(root):
        stem = os.path.splitext(image)[0]
        txt = stem + ".txt"
        if not os.path.isfile(txt):
            skip(skips, strict, image, "missing_answer", f"no {os.path.basename(txt)} beside it")
            continue
        try:
            with open(txt, encoding="utf-8-sig") as f:
                # the final newline an editor adds is not part of the transcript; inner ones are
                answer = f.read().rstrip("\r\n")
        except UnicodeDecodeError as e:
            skip(skips, strict, txt, "bad_record", f"not UTF-8: {e}")
            continue
        sample = make_sample(os.path.relpath(image, root).replace(os.sep, "/"), image, prompt, answer,
                             source, where=txt, skips=skips, strict=strict)
        if sample is not None:
            yield sample
