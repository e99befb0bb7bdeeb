"""
OmniDocBench (Ouyang et al., CVPR 2025, github.com/opendatalab/OmniDocBench): page parsing benchmark
that DeepSeek-OCR reports edit distance on.

Ground truth: OmniDocBench.json, a list of pages

    {"layout_dets": [{"category_type": "text_block", "order": 0, "ignore": false, "anno_id": 3,
                      "text": "...", "latex": "...", "html": "...", "poly": [...], ...}, ...],
     "page_info": {"image_path": "xxx.jpg", "width": ..., "height": ..., "page_attribute": {...}},
     "extra": {"relation": [{"source_anno_id": 5, "target_anno_id": 6, "relation_type": "truncated"}]}}

with the page images in images/ beside the JSON. The page's answer is assembled from its blocks in
reading `order`, leaving out blocks marked `ignore: true` (the benchmark excludes them from scoring
too) and blocks with no text (figures). Tables use their HTML (the benchmark's table ground truth and
what DeepSeek-OCR emits), display equations their LaTeX, everything else its text. Blocks are joined
by a blank line, as markdown paragraphs; a paragraph that the layout split in two ("truncated"
relation) is rejoined with a space, as the benchmark's evaluator does.

Predictions: one markdown file per page, named like the image with .md (what OmniDocBench's
end-to-end evaluator reads from its prediction directory).
"""

import os
import sys

from tasks.common import json_list_records, make_sample, new_skips, resolve_image, skip

# No grounding tag: the assembled answers carry no boxes, so "<|grounding|>..." would be a lie.
DEFAULT_PROMPT = "Convert the document to markdown."


def block_text(block):
    """The ground-truth string of one layout block ("" when it has none, e.g. a figure)."""
    cat = block.get("category_type", "")
    if cat == "table":
        keys = ("html", "latex", "text")
    elif cat.startswith("equation"):
        keys = ("latex", "text")
    else:
        keys = ("text", "latex", "html")
    for k in keys:
        v = block.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def page_text(page, skip_categories=()):
    """Assemble a page's text from its layout_dets in reading order. Blocks without an order go
    after the ordered ones, in file order (sorting must not fail on a partly annotated page)."""
    blocks = [(i, b) for i, b in enumerate(page.get("layout_dets", [])) if isinstance(b, dict)]
    blocks = [(i, b) for i, b in blocks
              if not b.get("ignore", False) and b.get("category_type") not in skip_categories]
    blocks.sort(key=lambda ib: (ib[1].get("order") is None, ib[1].get("order") or 0, ib[0]))
    relations = (page.get("extra") or {}).get("relation") or []
    truncated = {(r.get("source_anno_id"), r.get("target_anno_id")) for r in relations
                 if isinstance(r, dict) and r.get("relation_type", r.get("relation")) == "truncated"}
    out, prev_id = [], None
    for _, b in blocks:
        text = block_text(b)
        if not text:
            continue
        if out and (prev_id, b.get("anno_id")) in truncated:
            out[-1] += " " + text
        else:
            out.append(text)
        prev_id = b.get("anno_id")
    return "\n\n".join(out)


def read(path, image_dir=None, prompt=DEFAULT_PROMPT, skip_categories=(), strict=False, skips=None, source=None):
    """Yield one sample per page of an OmniDocBench JSON. Images are looked up in image_dir, by
    default images/ beside the JSON (the dataset's layout) or else the JSON's own directory. The id
    is page_info.image_path, which write_predictions turns into the .md name."""
    skips = new_skips() if skips is None else skips
    json_dir = os.path.dirname(os.path.abspath(path))
    if image_dir is None:
        image_dir = os.path.join(json_dir, "images") if os.path.isdir(os.path.join(json_dir, "images")) else json_dir
    source = source or os.path.splitext(os.path.basename(path))[0]
    for where, page in json_list_records(path, "OmniDocBench", "pages with 'layout_dets' and 'page_info'"):
        info = page.get("page_info") if isinstance(page, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("image_path"), str):
            skip(skips, strict, where, "bad_record", "no page_info.image_path")
            continue
        image = info["image_path"]
        sample = make_sample(image, resolve_image(image, image_dir), prompt, page_text(page, skip_categories),
                             source, where=f"{where} ({image})", skips=skips, strict=strict)
        if sample is not None:
            yield sample


def md_name(sample_id):
    """xxx.jpg (or dir/xxx.jpg) -> xxx.md, the name OmniDocBench's evaluator looks for."""
    return os.path.splitext(os.path.basename(sample_id))[0] + ".md"


def write_predictions(out_dir, samples, preds):
    """One <image stem>.md per sample in out_dir; returns the written paths."""
    samples, preds = list(samples), list(preds)
    assert len(samples) == len(preds), f"{len(samples)} samples but {len(preds)} predictions"
    names = [md_name(s["id"]) for s in samples]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"several samples would write the same markdown file(s) {dupes[:5]}: ids must have distinct stems"
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, pred in zip(names, preds):
        p = os.path.join(out_dir, name)
        with open(p, "w", encoding="utf-8", newline="") as f:  # bytes as generated, on any OS
            f.write(pred)
        paths.append(p)
    return paths


def read_predictions(out_dir, samples):
    """The .md files in out_dir for samples -> list of {"id", "pred", "ref"}. A missing file reads as
    an empty prediction (scored as all wrong, like a page the model failed on) and is reported."""
    recs, missing = [], 0
    for s in samples:
        p = os.path.join(out_dir, md_name(s["id"]))
        if os.path.isfile(p):
            with open(p, encoding="utf-8", newline="") as f:
                pred = f.read()
        else:
            pred, missing = "", missing + 1
        recs.append({"id": s["id"], "pred": pred, "ref": s["answer"]})
    if missing:
        print(f"{out_dir}: {missing} of {len(recs)} prediction .md files missing; scored as empty", file=sys.stderr)
    return recs
