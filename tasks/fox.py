"""
Fox (Liu et al. 2024, github.com/ucaslcl/Fox) page-OCR benchmark: the set DeepSeek-OCR reports its
compression-ratio table on (English pages, 600-1300 text tokens).

Ground truth, e.g. en_page_ocr.json, a JSON list of

    {"image": "en_1.png",
     "conversations": [{"from": "human", "value": "<image>\\nOCR this image..."},
                       {"from": "gpt", "value": "<page text>"}]}

Fox keeps images in a separate folder given on the command line (en_pdf_png/ for en_page_ocr.json),
so `image_dir` says where they are; by default the JSON's own directory.

Predictions, in the layout Fox's eval_tools/eval_ocr_test.py reads (so its numbers can be checked
with the authors' own script): a JSON list of {"image", "question", "label" (ground truth),
"answer" (model output)}.
"""

import json
import os

from tasks.common import (
    DataError,
    join_prompt,
    json_list_records,
    make_sample,
    new_skips,
    resolve_image,
    skip,
)

HUMAN_ROLES = ("human", "user")
MODEL_ROLES = ("gpt", "assistant")


def read(path, image_dir=None, strict=False, skips=None, source=None):
    """Yield samples from a Fox ground-truth JSON. The sample id is the image name exactly as the
    JSON writes it, which is what write_predictions puts back in "image"."""
    skips = new_skips() if skips is None else skips
    base_dir = os.path.abspath(image_dir) if image_dir else os.path.dirname(os.path.abspath(path))
    source = source or os.path.splitext(os.path.basename(path))[0]
    for where, rec in json_list_records(path, "Fox", "{'image', 'conversations'} records"):
        conv = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(conv, list) or not isinstance(rec.get("image"), str):
            skip(skips, strict, where, "bad_record", "expected {'image': str, 'conversations': [...]}")
            continue
        # the first human turn is the question; the first model turn after it is the transcript
        hi = next((j for j, t in enumerate(conv) if isinstance(t, dict) and t.get("from") in HUMAN_ROLES), None)
        mi = None if hi is None else next(
            (j for j in range(hi + 1, len(conv)) if isinstance(conv[j], dict) and conv[j].get("from") in MODEL_ROLES), None)
        if mi is None:
            skip(skips, strict, where, "bad_record", "no human turn followed by a gpt turn in conversations")
            continue
        sample = make_sample(rec["image"], resolve_image(rec["image"], base_dir), conv[hi].get("value", ""),
                             conv[mi].get("value"), source, where=where, skips=skips, strict=strict)
        if sample is not None:
            yield sample


def write_predictions(path, samples, preds):
    """Write Fox-style predictions for samples (from read()) and their predicted texts."""
    samples, preds = list(samples), list(preds)
    assert len(samples) == len(preds), f"{len(samples)} samples but {len(preds)} predictions"
    out = [{"image": s["id"], "question": join_prompt(s), "label": s["answer"], "answer": p}
           for s, p in zip(samples, preds)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)  # Fox's own layout, readable in a diff
    return path


def read_predictions(path):
    """A Fox predictions file -> list of {"id", "prompt", "pred", "ref"} (the record shape
    nanoocr.metrics.summarize takes). Note the field names: Fox's "label" is the ground truth and
    its "answer" is the model's output."""
    with open(path, encoding="utf-8-sig") as f:
        data = json.load(f)
    recs = []
    for i, rec in enumerate(data):
        if not (isinstance(rec, dict) and "label" in rec and "answer" in rec):
            raise DataError(f"{path}[{i}]: expected {{'image', 'question', 'label', 'answer'}}")
        recs.append({"id": rec.get("image", str(i)), "prompt": rec.get("question", ""),
                     "pred": rec["answer"], "ref": rec["label"]})
    return recs
