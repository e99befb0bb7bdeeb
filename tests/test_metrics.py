"""
nanoocr/metrics.py against values worked out by hand on fixed strings (the arithmetic is in the
comments), plus an independent dynamic-programming Levenshtein on random strings.
"""

import math
import random

import pytest

from nanoocr import metrics


def lev_dp(a, b):
    """Textbook O(len(a)·len(b)) Levenshtein, as an independent check of the rapidfuzz path."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_edit_distance_matches_dp_on_random_strings():
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("abc \n") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("abc \n") for _ in range(rng.randint(0, 30)))
        assert metrics.edit_distance(a, b) == lev_dp(a, b)
        assert metrics.edit_distance(a.split(), b.split()) == lev_dp(a.split(), b.split())


def test_cer():
    # kitten -> sitting: k->s, e->i, +g = 3 edits; reference "sitting" has 7 chars -> 3/7
    assert metrics.cer(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    # the denominator is the *reference*: swapping the roles gives 3/6, which must differ
    assert metrics.cer(["sitting"], ["kitten"]) == pytest.approx(3 / 6)
    # corpus-level, not a mean of ratios: "abc"/"abd" 1 edit, "xyz"/"xy" 1 edit -> (1+1)/(3+2) = 0.4
    # (the mean of per-sample ratios would be (1/3 + 1/2)/2 = 0.4167)
    assert metrics.cer(["abc", "xyz"], ["abd", "xy"]) == pytest.approx(0.4)
    # a repetition loop exceeds 1: "aaaa" vs "a" = 3 deletions / 1 char = 3.0
    assert metrics.cer(["aaaa"], ["a"]) == pytest.approx(3.0)
    assert metrics.cer(["same"], ["same"]) == 0.0
    # only empty references: denominator 1, so the value counts the spurious characters: 2
    assert metrics.cer(["ab"], [""]) == pytest.approx(2.0)
    with pytest.raises(AssertionError, match="2 predictions but 1 references"):
        metrics.cer(["a", "b"], ["a"])


def test_wer():
    # "the cat sat" vs "the cat sat down": 1 missing word / 4 reference words = 0.25
    assert metrics.wer(["the cat sat"], ["the cat sat down"]) == pytest.approx(0.25)
    # "a b c" vs "a x c d": b->x, +d = 2 / 4 = 0.5; plus "hello world" vs "hello  world\n" = 0 / 2
    # corpus: (2 + 0) / (4 + 2) = 1/3 (whitespace runs and newlines only separate words)
    assert metrics.wer(["a b c", "hello world"], ["a x c d", "hello  world\n"]) == pytest.approx(1 / 3)


def test_normalized_edit_distance_and_exact_match():
    # kitten/sitting: 3 / max(6, 7) = 3/7
    assert metrics.normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert metrics.normalized_edit_distance("", "") == 0.0
    assert metrics.normalized_edit_distance("abc", "") == 1.0          # 3 / max(3, 0)
    assert metrics.normalized_edit_distance("aaaa", "a") == 0.75       # 3 / max(4, 1): bounded by 1, unlike CER
    # mean over samples: (3/7 + 0) / 2 = 3/14
    assert metrics.mean_normalized_edit_distance(["kitten", ""], ["sitting", ""]) == pytest.approx(3 / 14)
    # "hello\n" == "hello" after stripping, "a" != "b": 1 of 2
    assert metrics.exact_match(["hello\n", "a"], ["hello", "b"]) == 0.5


def test_fox_word_prf():
    # pred words {the, cat, sat, on, mat.} (5 distinct: "the" twice counts once; "mat." keeps its dot)
    # ref words  {the, cat, sat, on, a, mat} (6); common {the, cat, sat, on} = 4
    # P = 4/5 = 0.8, R = 4/6 = 2/3, F1 = 2·(4/5)(2/3) / (4/5 + 2/3) = (16/15)/(22/15) = 8/11
    p, r, f = metrics.fox_word_prf("the cat sat on the mat.", "the cat sat on a mat")
    assert (p, r, f) == (pytest.approx(0.8), pytest.approx(2 / 3), pytest.approx(8 / 11))
    # case matters: "The" != "the" -> P = 0/1, R = 0/1
    assert metrics.fox_word_prf("The", "the") == (0.0, 0.0, 0.0)
    assert metrics.fox_word_prf("", "") == (1.0, 1.0, 1.0)            # blank page read as blank
    assert metrics.fox_word_prf("", "some text") == (0.0, 0.0, 0.0)
    assert metrics.fox_word_prf("spurious", "") == (0.0, 0.0, 0.0)
    # a looping output keeps perfect set precision (why CER is reported beside it)
    assert metrics.fox_word_prf("a b a b a b a b", "a b")[0] == 1.0


def test_compression_buckets_and_summarize():
    recs = [
        # ratio 300/100 = 3 -> [3,4): exact
        {"pred": "x y", "ref": "x y", "answer_tokens": 300, "vision_tokens": 100},
        # ratio 700/100 = 7 -> [7,8): P = 1/2 ({a, z} ∩ {a, b} = {a}), 1 edit on 3 ref chars
        {"pred": "a z", "ref": "a b", "answer_tokens": 700, "vision_tokens": 100},
        # ratio 750/100 = 7.5 -> [7,8): P = 1, 0 edits on 5 ref chars
        {"pred": "hello", "ref": "hello", "answer_tokens": 750, "vision_tokens": 100},
        # ratio 1200/64 = 18.75 -> [15,20): P = 0, "q" vs "w": 1 edit on 1 char
        {"pred": "q", "ref": "w", "answer_tokens": 1200, "vision_tokens": 64},
        # ratio 1500/64 = 23.4 -> [20,inf): empty prediction, 4 edits on 4 chars
        {"pred": "", "ref": "long", "answer_tokens": 1500, "vision_tokens": 64},
    ]
    b = {x["bucket"]: x for x in metrics.compression_buckets(recs)}
    assert list(b) == ["[3,4)", "[7,8)", "[15,20)", "[20,inf)"]  # empty buckets left out
    assert b["[3,4)"]["n"] == 1 and b["[3,4)"]["precision"] == 1.0 and b["[3,4)"]["cer"] == 0.0
    assert b["[7,8)"]["n"] == 2 and b["[7,8)"]["mean_ratio"] == pytest.approx(7.25)   # (7 + 7.5) / 2
    assert b["[7,8)"]["precision"] == pytest.approx(0.75)                             # (1/2 + 1) / 2
    assert b["[7,8)"]["cer"] == pytest.approx(1 / 8)                                  # (1 + 0) / (3 + 5)
    assert b["[7,8)"]["ned"] == pytest.approx((1 / 3 + 0) / 2)
    assert b["[15,20)"]["precision"] == 0.0 and b["[15,20)"]["cer"] == 1.0
    assert b["[20,inf)"]["mean_ratio"] == pytest.approx(1500 / 64)
    s = metrics.summarize(recs)
    # corpus CER: edits 0 + 1 + 0 + 1 + 4 = 6 over ref chars 3 + 3 + 5 + 1 + 4 = 16 -> 0.375
    assert s["n"] == 5 and s["cer"] == pytest.approx(6 / 16)
    # WER: word edits 0 + 1 + 0 + 1 + 1 = 3 over ref words 2 + 2 + 1 + 1 + 1 = 7
    assert s["wer"] == pytest.approx(3 / 7)
    assert s["exact_match"] == pytest.approx(2 / 5)
    # precision: (1 + 1/2 + 1 + 0 + 0) / 5 = 0.5; recall: same sets here, also 0.5
    assert s["fox_precision"] == pytest.approx(0.5) and s["fox_recall"] == pytest.approx(0.5)
    assert s["ned"] == pytest.approx((0 + 1 / 3 + 0 + 1 + 1) / 5)
    assert s["mean_compression"] == pytest.approx((3 + 7 + 7.5 + 1200 / 64 + 1500 / 64) / 5)
    assert s["distinct_outputs"] == 5 and metrics.summarize([dict(r, pred="same") for r in recs])["distinct_outputs"] == 1
    assert len(s["compression_buckets"]) == 4
    # without token counts there is no compression table
    plain = metrics.summarize([{"pred": "a", "ref": "a"}])
    assert "compression_buckets" not in plain and plain["cer"] == 0.0 and plain["fox_f1"] == 1.0
    assert metrics.COMPRESSION_EDGES[-1] == math.inf
    assert {(6, 7), (9, 10), (10, 12), (12, 13), (13, 15), (15, 20)} <= set(zip(metrics.COMPRESSION_EDGES, metrics.COMPRESSION_EDGES[1:]))
