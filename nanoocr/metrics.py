"""
OCR metrics the field reports (dev/design.md §6), on plain strings. Edit distance is rapidfuzz's
Levenshtein (unit-cost insert / delete / substitute; a swap of two characters costs 2), in C and
fast enough for whole pages.

- cer / wer: corpus edit distance ÷ total reference length, in characters / words. An output much
  longer than the reference (a repetition loop) makes them exceed 1, which is the point: it shows.
- normalized_edit_distance: per sample lev / max(len(pred), len(ref)), in [0, 1]; averaged over
  samples it is the "edit distance" of Fox, Nougat and OmniDocBench.
- exact_match: pred == ref after stripping surrounding whitespace (a trailing newline from
  generation is not an error worth a 0).
- Fox word-set precision / recall / F1: words are whitespace-split tokens, as in Fox's script.
  Punctuation stays attached ("end." and "end" are different words) and case matters; no Chinese
  segmentation (Fox uses jieba for Chinese; these numbers are for space-separated languages).
  Sets, not bags: a repeated word counts once, so a looping output is not penalised by precision —
  read it beside CER.
- Compression ratio (DeepSeek-OCR): answer text tokens ÷ vision tokens, bucketed.

A record is a dict {"pred": str, "ref": str} with optional "answer_tokens" and "vision_tokens"
(ints) for the compression table. No text normalisation is applied anywhere: published numbers
that normalise (OmniDocBench strips markdown and spacing) will read lower than these.
"""

import math

from rapidfuzz.distance import Levenshtein

# Compression-ratio buckets (text tokens ÷ vision tokens). DeepSeek-OCR's Fox table groups pages by
# ground-truth length (600-700, ..., 1200-1300 text tokens) at 64 and 100 vision tokens, i.e. ratios
# from about 6× to 20×, and its headline is ~97% precision below 10× and ~60% at 20×. Our models and
# tokenizer differ, so token ranges would not line up; buckets of the ratio itself do: DeepSeek-OCR's
# (6-7, 7-8, 8-9, 9-10, 10-12, 12-13, 13-15, 15-20, >20) and, below them, one per unit, where a small
# model reading short pages lands. (Ratios use our tokenizer's counts, not DeepSeek's.)
COMPRESSION_EDGES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15, 20, math.inf)


def _check(preds, refs):
    preds, refs = list(preds), list(refs)
    assert len(preds) == len(refs), f"{len(preds)} predictions but {len(refs)} references"
    assert all(isinstance(s, str) for s in preds + refs), "predictions and references must be strings"
    return preds, refs


def edit_distance(a, b):
    """Levenshtein distance between two strings (characters) or two lists (e.g. of words)."""
    return Levenshtein.distance(a, b)


def words(text):
    return text.split()


def cer(preds, refs):
    """Character error rate: sum of edit distances ÷ total reference characters. With only empty
    references the denominator is taken as 1 (the count of spurious characters) to stay finite."""
    preds, refs = _check(preds, refs)
    dist = sum(edit_distance(p, r) for p, r in zip(preds, refs))
    return dist / max(1, sum(len(r) for r in refs))


def wer(preds, refs):
    """Word error rate: edit distance over whitespace-split words, summed ÷ total reference words."""
    preds, refs = _check(preds, refs)
    dist = sum(edit_distance(words(p), words(r)) for p, r in zip(preds, refs))
    return dist / max(1, sum(len(words(r)) for r in refs))


def normalized_edit_distance(pred, ref):
    """lev(pred, ref) / max(len(pred), len(ref)) for one sample; 0 for two empty strings."""
    n = max(len(pred), len(ref))
    return edit_distance(pred, ref) / n if n else 0.0


def mean_normalized_edit_distance(preds, refs):
    preds, refs = _check(preds, refs)
    return sum(normalized_edit_distance(p, r) for p, r in zip(preds, refs)) / max(1, len(refs))


def exact_match(preds, refs):
    """Fraction of samples whose prediction equals the reference (surrounding whitespace ignored)."""
    preds, refs = _check(preds, refs)
    return sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / max(1, len(refs))


def fox_word_prf(pred, ref):
    """Fox's word-set (precision, recall, F1) for one sample: precision = |P∩G| / |P|, recall =
    |P∩G| / |G|, F1 their harmonic mean. An empty denominator scores 1 when both sets are empty (a
    blank page read as blank) and 0 otherwise.
    Beware when comparing with published Fox numbers: Fox's eval_ocr_test.py passes (label, answer)
    into its (pred, gt) parameters, so the "precision" it prints is |P∩G| / |G|, our recall."""
    P, G = set(words(pred)), set(words(ref))
    if not P and not G:
        return 1.0, 1.0, 1.0
    hit = len(P & G)
    precision = hit / len(P) if P else 0.0
    recall = hit / len(G) if G else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _bucket_label(lo, hi):
    return f"[{lo:g},{'inf' if hi == math.inf else f'{hi:g}'})"


def compression_buckets(records, edges=COMPRESSION_EDGES):
    """Group records by compression ratio = answer_tokens / vision_tokens into [edges[i], edges[i+1])
    and report, per non-empty bucket: n, mean ratio, mean Fox precision, CER, mean normalised edit
    distance. vision_tokens should be the *valid* count for a padded view (dev/design.md §2) to match the
    paper's accounting."""
    buckets = [[] for _ in range(len(edges) - 1)]
    for r in records:
        assert r.get("vision_tokens", 0) > 0, f"record {r.get('id', '?')} needs vision_tokens > 0 for a compression ratio"
        ratio = r["answer_tokens"] / r["vision_tokens"]
        for i in range(len(edges) - 1):
            if edges[i] <= ratio < edges[i + 1]:
                buckets[i].append((ratio, r))
                break
    out = []
    for i, b in enumerate(buckets):
        if not b:
            continue
        preds, refs = [r["pred"] for _, r in b], [r["ref"] for _, r in b]
        out.append({
            "bucket": _bucket_label(edges[i], edges[i + 1]),
            "n": len(b),
            "mean_ratio": sum(x for x, _ in b) / len(b),
            "precision": sum(fox_word_prf(p, g)[0] for p, g in zip(preds, refs)) / len(b),
            "cer": cer(preds, refs),
            "ned": mean_normalized_edit_distance(preds, refs),
        })
    return out


def summarize(records):
    """All metrics for a list of {"pred", "ref"[, "answer_tokens", "vision_tokens"]} records -> dict.
    Fox P/R/F1 and normalised edit distance are per-sample means (as Fox and OmniDocBench average);
    CER/WER are corpus-level. The compression table is added when every record has token counts."""
    records = list(records)
    assert records, "summarize() needs at least one record"
    preds, refs = _check([r["pred"] for r in records], [r["ref"] for r in records])
    prf = [fox_word_prf(p, g) for p, g in zip(preds, refs)]
    n = len(records)
    out = {
        "n": n,
        "cer": cer(preds, refs),
        "wer": wer(preds, refs),
        "ned": mean_normalized_edit_distance(preds, refs),
        "exact_match": exact_match(preds, refs),
        "fox_precision": sum(x[0] for x in prf) / n,
        "fox_recall": sum(x[1] for x in prf) / n,
        "fox_f1": sum(x[2] for x in prf) / n,
        # a collapsed encoder writes one caption for every image: distinct outputs < n says so
        "distinct_outputs": len(set(preds)),
    }
    if all("answer_tokens" in r and "vision_tokens" in r for r in records):
        out["mean_compression"] = sum(r["answer_tokens"] / r["vision_tokens"] for r in records) / n
        out["compression_buckets"] = compression_buckets(records)
    return out
