"""
The synthetic renderer (nanoocr/synth.py, nanoocr/synth_text.py) and scripts/render_samples.py.
Every test passes with only DejaVu + Pillow's bundled font installed; more fonts only add cases.
Pages and receipts are rendered small (256-512 px) to keep the file to a few tens of seconds.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nanoocr import synth as S
from nanoocr import synth_text as T
from nanoocr import typefaces as TF

SMALL = {"line": (32, 256), "line_page": (256, 256), "block": (256, 256), "page": (320, 320), "receipt": (512, 384)}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small(seed, index, kind, split="train", **kw):
    H, W = SMALL[kind]
    return S.render_annotated(seed, index, kind, split, height=H, width=W, **kw)


# -----------------------------------------------------------------------------
# determinism

@pytest.mark.parametrize("kind", S.KINDS)
def test_same_seed_index_same_pixels(kind):
    for index in (0, 7):
        a, pa, ta, _ = small(3, index, kind)
        b, pb, tb, _ = small(3, index, kind)
        assert a.mode == "RGB" and a.size == (SMALL[kind][1], SMALL[kind][0])
        assert np.array_equal(np.asarray(a), np.asarray(b)) and (pa, ta) == (pb, tb)
    c, _, tc, _ = small(3, 8, kind)
    assert tc != tb or not np.array_equal(np.asarray(c), np.asarray(b)), "another index gave the same sample"
    assert pa == "Free OCR." and "<image>" not in pa


def test_same_pixels_in_a_fresh_process():
    """Stable across processes (hash randomisation, import order): a stand-in for 'across machines'."""
    code = ("import hashlib, numpy as np; from nanoocr import synth as S\n"
            "for k in S.KINDS:\n"
            "    im, _, a = S.render(5, 11, k, height=128 if k != 'line' else 32, width=128)\n"
            "    print(k, hashlib.sha256(np.asarray(im).tobytes() + a.encode()).hexdigest())\n")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True).stdout
    import hashlib
    for line in out.strip().splitlines():
        k, h = line.split()
        im, _, a = S.render(5, 11, k, height=128 if k != "line" else 32, width=128)
        assert hashlib.sha256(np.asarray(im).tobytes() + a.encode()).hexdigest() == h, f"{k} differs across processes"


# -----------------------------------------------------------------------------
# splits

def test_split_seed_ranges_disjoint():
    """Each split's sample seeds fill their own 2^60-wide block, even at the extreme seeds / indices."""
    bases = sorted(S.SPLIT_SEED_BASE.values())
    assert all(b - a >= 1 << 60 for a, b in zip(bases, bases[1:]))
    seeds = {sp: {S.sample_seed(seed, index, sp) for seed in (0, 1, (1 << 24) - 1) for index in (0, 1, 999, (1 << 36) - 1)}
             for sp in S.SPLITS}
    for sp in S.SPLITS:
        assert len(seeds[sp]) == 12
        assert all(S.SPLIT_SEED_BASE[sp] <= s < S.SPLIT_SEED_BASE[sp] + (1 << 60) for s in seeds[sp])
    assert not seeds["train"] & seeds["val"] and not seeds["train"] & seeds["test"] and not seeds["val"] & seeds["test"]
    with pytest.raises(AssertionError):
        S.sample_seed(1 << 24, 0, "train")
    with pytest.raises(AssertionError):
        S.sample_seed(0, 1 << 36, "train")


def test_split_texts_disjoint():
    answers = {}
    for sp in S.SPLITS:
        answers[sp] = {small(0, i, "line", sp, boxes=False)[2] for i in range(120)}
        assert len(answers[sp]) > 100, "line texts repeat too often"
    assert not answers["train"] & answers["val"] and not answers["train"] & answers["test"] and not answers["val"] & answers["test"]
    # every text unit of every kind (lines, sentences, titles, store and item names) hashes to its split
    for sp in S.SPLITS:
        for kind in S.KINDS:
            for i in range(3):
                units = small(1, i, kind, sp, boxes=False)[3]["units"]
                assert units and all(T.text_split(u) == sp for u in units), (sp, kind, units)


# -----------------------------------------------------------------------------
# geometry: every answer character is drawn, inside the canvas, in reading order

@pytest.mark.parametrize("kind", S.KINDS)
def test_every_answer_glyph_inside_canvas(kind):
    H, W = SMALL[kind]
    for i in range(12):
        # strong geometry every time: rotation and shear must still keep glyphs inside
        deg = {"rotate_p": 1.0, "shear_p": 1.0} if i % 2 else None
        img, _, answer, info = small(2, i, kind, degrade=deg)
        boxes = info["boxes"]
        assert answer.strip(), f"{kind} {i}: empty answer"
        inked = {j for j, c in enumerate(answer) if not c.isspace()}
        assert set(boxes) == inked, f"{kind} {i}: answer characters without a drawn glyph (or the reverse)"
        for j, (x0, y0, x1, y1) in boxes.items():
            assert 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H, f"{kind} {i}: {answer[j]!r} box {(x0, y0, x1, y1)} outside {W}x{H}"


def test_line_strip_matches_probe_recipe():
    """32x256 strips: font ~0.6 H, small offsets; 32x640 strips hold longer lines."""
    lens = {256: [], 640: []}
    for W in lens:
        for i in range(40):
            img, _, a, info = S.render_annotated(0, i, "line", height=32, width=W, degrade="none")
            assert img.size == (W, 32)
            ys = [b[1] for b in info["boxes"].values()] + [b[3] for b in info["boxes"].values()]
            assert min(ys) >= 0 and max(ys) <= 32
            assert min(b[0] for b in info["boxes"].values()) <= 0.25 * 32 + 4  # starts near the left edge
            lens[W].append(len(a))
    assert max(lens[256]) <= 40 and np.mean(lens[640]) > 1.5 * np.mean(lens[256])
    # font size override and font restriction are honoured
    _, _, _, info = S.render_annotated(0, 0, "line", fonts=["DejaVu Sans"], font_px=19, degrade="none")
    assert all(TF.font_index()[n].family == "DejaVu Sans" for n in info["fonts"])


def _check_reading_order(answer, boxes):
    """Within each answer line glyphs go left to right; lines go top to bottom."""
    prev_y, pos = -1e9, 0
    for line in answer.split("\n"):
        idx = [pos + k for k, c in enumerate(line) if not c.isspace()]
        pos += len(line) + 1
        if not idx:
            continue
        xs = [(boxes[j][0] + boxes[j][2]) / 2 for j in idx]
        assert all(a < b for a, b in zip(xs, xs[1:])), f"line {line!r} is not left to right"
        y = np.mean([(boxes[j][1] + boxes[j][3]) / 2 for j in idx])
        assert y > prev_y, f"line {line!r} is above the line before it"
        prev_y = y


def test_receipt_answer_follows_layout_reading_order():
    for i in range(10):
        _, _, answer, info = small(4, i, "receipt")
        _check_reading_order(answer, info["boxes"])
        assert any(l.startswith("TOTAL") for l in answer.split("\n")) or len(answer.split("\n")) > 8
    # columns: amounts are right-aligned, so their last glyphs share one right edge
    _, _, answer, info = small(4, 0, "receipt", degrade="none")
    rights = [max(info["boxes"][j][2] for j in range(p, p + len(l)) if j in info["boxes"])
              for l, p in _lines_with_pos(answer) if l[-1:].isdigit() and "  " in l]  # column rows
    assert len(rights) >= 3 and max(rights) - min(rights) < 3


def _lines_with_pos(answer):
    pos = 0
    for l in answer.split("\n"):
        yield l, pos
        pos += len(l) + 1


def test_page_answer_follows_layout_reading_order():
    for i in range(6):
        _, _, answer, info = small(5, i, "page", columns=1)
        _check_reading_order(answer, info["boxes"])
        assert len(answer) > 200, "a 320x320 page should be dense"
    # two columns: the first column is read to its bottom before the second starts
    img, _, answer, info = S.render_annotated(5, 0, "page", height=640, width=640, columns=2, degrade="none")
    xs = [info["boxes"][p][0] for l, p in _lines_with_pos(answer) if l]
    k = int(np.argmax(np.diff(xs) > 100)) + 1
    assert 0 < k < len(xs) and all(x < 320 for x in xs[:k]) and all(x > 300 for x in xs[k:])


# -----------------------------------------------------------------------------
# fonts and tofu

def test_list_fonts():
    """The renderer draws exactly the shipped files, whatever the machine has installed."""
    fonts = TF.list_fonts()
    names = [f.name for f in fonts]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(f.path.startswith(TF.FONT_DIR) for f in fonts)
    families = {f.family for f in fonts}
    assert {"DejaVu Sans", "Liberation Serif", "FreeSans", "P052", "Carlito", "EB Garamond", "Courier Prime"} <= families
    assert all(set(T.CORE_CHARS) <= f.covers for f in fonts)
    # symbol / dingbat fonts draw non-Latin shapes for ASCII: never used
    assert not any("Symbol" in f.family or "Dingbat" in f.family or f.family == "D050000L" for f in fonts)
    # every shipped family's folder carries its licence
    import os
    for folder in {os.path.dirname(f.path) for f in fonts}:
        assert os.path.getsize(os.path.join(folder, "LICENSE")) > 500, folder
    # the manifest names files and hashes of exactly the selected families
    man = TF.font_manifest(["Carlito"])
    assert [n for n, _ in man] == sorted(f.name for f in fonts if f.family == "Carlito") and all(len(h) == 12 for _, h in man)


def test_missing_family_is_an_error_not_a_fallback():
    """A preset naming a family that does not ship stops: it never draws from the others."""
    with pytest.raises(ValueError, match=r"\['Comic Sans'\] are not among the shipped fonts"):
        TF.check_fonts(["DejaVu Sans", "Comic Sans"])
    with pytest.raises(ValueError, match="Comic Sans"):
        S.render(0, 0, "line", fonts=["DejaVu Sans", "Comic Sans"])


def test_answers_have_no_tofu():
    """Every answer character is drawn by a real glyph of each font used: not .notdef, not blank."""
    notdef = {}
    for kind in S.KINDS:
        for i in range(10):
            _, _, answer, info = small(6, i, kind, typeset_p=1.0)
            for name in info["fonts"]:
                spec = TF.font_index()[name]
                font = TF.get_font(name, 24)
                if name not in notdef:
                    m = font.getmask(TF._NOTDEF)
                    notdef[name] = (m.size, bytes(m))
                for c in set(answer) - {" ", "\n"}:
                    assert c in spec.covers, f"{kind} {i}: {c!r} not covered by {name}"
                    m = font.getmask(c)
                    assert m.getbbox() and (m.size, bytes(m)) != notdef[name], f"{c!r} draws tofu in {name}"


def test_no_font_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(TF, "FONT_DIR", "/nonexistent/fonts")
    TF.list_fonts.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="no usable font.*reinstall"):
            TF.list_fonts()
    finally:
        monkeypatch.undo()
        TF.list_fonts.cache_clear()
    assert TF.list_fonts()


# -----------------------------------------------------------------------------
# text statistics

def test_text_statistics_within_stated_bounds():
    rng = random.Random(0)
    samples = {
        "prose": [T.prose_sentence(rng) for _ in range(2000)],
        "random": [T.random_sentence(rng) for _ in range(2000)],
        "entity": [T.entity(rng) for _ in range(2000)],
        "line": [small(0, i, "line", boxes=False)[2] for i in range(300)],
    }
    for src, texts in samples.items():
        st = T.text_stats(texts)
        for key, (lo, hi) in T.TEXT_STATS_BOUNDS[src].items():
            assert lo <= st[key] <= hi, f"{src}: {key} = {st[key]:.3f} outside [{lo}, {hi}]"
    # real-language letter frequencies in prose (e >> z), uniform ones in random strings
    letters = [c.lower() for c in " ".join(samples["prose"]) if c.isalpha()]
    assert letters.count("e") > 20 * letters.count("z")
    letters = [c.lower() for c in " ".join(samples["random"]) if c.isalpha()]
    assert letters.count("e") < 2 * letters.count("z")
    # the mix is configurable: random strings only / prose only
    only_random = T.text_stats([small(0, i, "line", boxes=False, text_mix={"random": 1})[2] for i in range(100)])
    only_prose = T.text_stats([small(0, i, "line", boxes=False, text_mix={"prose": 1})[2] for i in range(100)])
    assert only_random["upper"] > 2 * only_prose["upper"]


def test_corpus_iter():
    docs = list(T.corpus_iter(max_chars=20000, seed=1))
    assert sum(map(len, docs)) == 20000 and all(isinstance(d, str) and d for d in docs)
    assert docs == list(T.corpus_iter(max_chars=20000, seed=1))
    text = "".join(docs)
    assert any(c.isdigit() for c in text) and any(c.isupper() for c in text) and "," in text and "\n" in text


# -----------------------------------------------------------------------------
# options, stream, script

def test_options_and_errors():
    with pytest.raises(TypeError, match="unknown options"):
        S.render(0, 0, "line", fontsize=3)
    with pytest.raises(AssertionError):
        S.render(0, 0, "poster")
    with pytest.raises(AssertionError):
        S.render(0, 0, "line", degrade={"blurr_p": 1})
    img, prompt, _ = S.render(0, 0, "line", prompt="OCR this.", degrade="none")
    assert prompt == "OCR this."
    a = np.asarray(img)
    assert a.max() == 255 and a.min() < 80  # clean: white paper, dark ink
    assert set(S.DEGRADATIONS) == set(S.SPLITS) and all(set(d) == set(S.NO_DEGRADATION) for d in S.DEGRADATIONS.values())


def test_render_samples_script(tmp_path):
    from scripts import render_samples
    n = len(S.KINDS) + 1
    render_samples.main([f"--n={n}", f"--out={tmp_path}", "--height=128", "--width=128", f"--grid={tmp_path / 'g.png'}"])
    rows = [json.loads(l) for l in open(tmp_path / "samples.jsonl", encoding="utf-8")]
    assert len(rows) == n and [r["kind"] for r in rows[:-1]] == list(S.KINDS)
    for r in rows:
        assert {"id", "image", "prompt", "answer"} <= set(r) and r["prompt"] == "<image>\nFree OCR." and r["answer"]
        assert Image.open(tmp_path / r["image"]).size == (128, 128)
    assert Image.open(tmp_path / "g.png").size[0] > 128
