"""
tasks/realistic.py (the user-like test rows) and what scripts/vision_eval.py and scripts/report.py do
with them: determinism, answers that are exactly the drawn text in glyphs the font has, the right
families per row, per-family CER and length checks. A few seconds, plus ~10 s of Tesseract.
"""

import io
import shutil

import pytest

from tasks import realistic as R


@pytest.fixture(scope="module")
def rows():
    return {row: R.realistic_samples(row) for row in R.ROWS}


def png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_rows_sizes_and_fields(rows):
    assert set(R.TRAIN_FAMILIES).isdisjoint(R.HELD_OUT_FAMILIES)
    for row, samples in rows.items():
        assert len(samples) == R.SIZES[row], row
        assert len({s["id"] for s in samples}) == len(samples)
        for s in samples:
            assert s["prompt"] == "Free OCR." and s["image"].mode == "RGB"
            assert s["answer"].strip() and all(line and line == line.strip() for line in s["answer"].split("\n")), (row, s["answer"])
            assert s["family"] in R.row_families(row), (row, s["family"])
            assert s["tess_psm"] == (7 if row in R.LINE_ROWS else 6)
        n_lines = [s["answer"].count("\n") + 1 for s in samples]
        if row in R.LINE_ROWS:
            assert set(n_lines) == {1} and all(3 <= len(s["answer"].split()) <= 10 for s in samples)
        elif row == "paragraphs":
            assert 2 <= min(n_lines) and max(n_lines) <= 5
        elif row == "pages":
            assert 10 <= min(n_lines) and max(n_lines) <= 21  # 10-20 lines and maybe a title
        elif row == "photos":
            assert all(260 <= len(s["answer"]) <= 340 for s in samples)
        elif row == "symbols":
            assert set(n_lines) == {12}


def test_rows_are_deterministic(rows):
    for row in R.ROWS:
        again = R.realistic_samples(row, limit=3)
        for a, b in zip(rows[row][:3], again):
            assert (a["id"], a["answer"], a["family"]) == (b["id"], b["answer"], b["family"])
            assert png(a["image"]) == png(b["image"]), f"{row} {a['id']}: same seed, different pixels"
    other = R.realistic_samples("clean_lines", limit=3, seed=1)
    assert [s["answer"] for s in other] != [s["answer"] for s in rows["clean_lines"][:3]]


def test_unseen_fonts_only_held_out(rows):
    fams = {s["family"] for s in rows["unseen_fonts"]}
    assert fams <= set(R.HELD_OUT_FAMILIES) and len(fams) >= 3
    for row in R.ROWS:
        if row != "unseen_fonts":
            assert not {s["family"] for s in rows[row]} & set(R.HELD_OUT_FAMILIES), row


def test_every_glyph_is_in_its_font(rows):
    from nanoocr.typefaces import font_index
    idx = font_index()
    for row, samples in rows.items():
        for s in samples:
            assert idx[s["font"]].family == s["family"]
            assert R.font_covers(s["font"], s["answer"]), (row, s["font"], s["answer"])
    # and the check itself can fail: no text font here has a CJK glyph
    assert not R.font_covers(rows["clean_lines"][0]["font"], "漢")


def test_symbols_carry_symbols_and_accents(rows):
    wanted = set(R.SYMBOL_CHARS + R.ACCENT_CHARS)
    for s in rows["symbols"]:
        assert len(set(s["answer"]) & wanted) >= 5, s["answer"]
    seen = set("".join(s["answer"] for s in rows["symbols"]))
    assert set("«»„”“$%@{}[]<>") <= seen and len(seen & set(R.ACCENT_CHARS)) >= 8


def test_degraded_lines_differ_from_clean():
    # same text and font as the clean crop would draw, then degraded: mostly grey noise and blur
    import numpy as np
    for s in R.realistic_samples("degraded_lines", limit=6):
        a = np.asarray(s["image"].convert("L"))
        assert 0 < (a < 128).mean() < 0.6 and len(np.unique(a)) > 20, s["id"]


def test_open_samples_realistic():
    from tasks.sources import open_samples
    samples, desc = open_samples("realistic:pages")
    assert len(samples) == R.SIZES["pages"] and desc.startswith("realistic:pages")
    assert samples[0]["answer"] == R.realistic_samples("pages", limit=1)[0]["answer"]
    assert len(open_samples("realistic:photos", limit=2)[0]) == 2
    with pytest.raises(ValueError, match="clean_lines"):
        open_samples("realistic")
    with pytest.raises(ValueError, match="photos"):
        open_samples("realistic:nope")


def test_compute_metrics_per_family_and_lengths():
    from scripts.vision_eval import compute_metrics, format_report
    base = dict(tokens=5, seconds=0.1, answer_tokens=4, vision_tokens=32)
    records = [dict(base, id="a", ref="abcdef", pred="abcdef", family="F1", tesseract_pred="abcdef", tesseract_seconds=0.1),
               dict(base, id="b", ref="abcdef", pred="abcdefabcdef", family="F2", tesseract_pred="abcxef", tesseract_seconds=0.1),
               dict(base, id="c", ref="xyz", pred="xyz", family="F2", tesseract_pred="", tesseract_seconds=0.1),
               {"id": "d", "image": "d.png", "error": "unreadable"}]
    m = compute_metrics(records)
    assert m["n"] == 4 and m["failed"] == 1
    assert m["model"]["per_family"] == {"F1": 0.0, "F2": pytest.approx(6 / 9)}
    assert m["model"]["max_len_ratio"] == 2.0 and m["model"]["n_over_1.5x"] == 1
    assert m["tesseract"]["per_family"] == {"F1": 0.0, "F2": pytest.approx(4 / 9)}
    assert m["tesseract"]["max_len_ratio"] == 1.0 and m["tesseract"]["n_over_1.5x"] == 0
    text = format_report(m)
    assert "max len ratio" in text and "#pred > 1.5x answer" in text and "F2" in text
    # records without families: no per-family table
    assert "per_family" not in compute_metrics([{k: v for k, v in records[0].items() if k != "family"}])["model"]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="apt-get install tesseract-ocr")
def test_tesseract_reads_clean_lines():
    """The sets are legible: an off-the-shelf reader gets clean line crops nearly right."""
    from scripts.vision_eval import run_tesseract
    from nanoocr.metrics import cer
    samples = R.realistic_samples("clean_lines", limit=16)
    preds = [run_tesseract(s["image"], psm=s["tess_psm"])[0] for s in samples]
    assert cer(preds, [s["answer"] for s in samples]) < 0.1


def test_add_tesseract_uses_sample_psm(monkeypatch):
    from scripts import vision_eval
    seen = []
    monkeypatch.setattr(vision_eval, "run_tesseract", lambda image, lang, psm: (seen.append(psm) or "x", 0.0))
    samples = R.realistic_samples("clean_lines", limit=1) + R.realistic_samples("pages", limit=1)
    records = [{"id": s["id"]} for s in samples]
    vision_eval.add_tesseract(records, samples, psm=3, sample_psm=True)
    vision_eval.add_tesseract(records, samples, psm=3)  # an explicit --tesseract_psm wins
    assert seen == [7, 6, 3, 3]


def test_report_card_realistic_table(tmp_path):
    import os
    import sys
    import json
    import subprocess
    from scripts.vision_eval import compute_metrics
    ev = tmp_path / "eval"
    ev.mkdir()
    base = dict(tokens=5, seconds=0.1, answer_tokens=4, vision_tokens=32, tesseract_seconds=0.1)
    recs = [dict(base, ref="abcd", pred="abcdabcd", family="P052", tesseract_pred="abcx"),
            dict(base, ref="abcd", pred="abcd", family="Carlito", tesseract_pred="abcd")]
    (ev / "realistic_unseen_fonts.metrics.json").write_text(json.dumps(compute_metrics(recs)))
    (ev / "realistic_photos.metrics.json").write_text(json.dumps(compute_metrics([dict(r, family="FreeSans") for r in recs])))
    env = dict(os.environ, NANOOCR_BASE_DIR=str(tmp_path))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "scripts.report", "--tag=none"], cwd=repo, env=env, check=True, capture_output=True)
    card = (tmp_path / "report" / "report.md").read_text()
    assert "| row | n | nanoocr CER | tesseract CER | ratio | max len ratio | #>1.5x |" in card
    # rows in ROWS order; CER 4/8 vs tesseract 1/8: ratio 4.00; one prediction 2x its answer
    assert card.index("| unseen_fonts | 2 | 0.5000 | 0.1250 | 4.00 | 2.00 | 1 |") < card.index("| photos | 2 |")
    assert "| family | unseen_fonts | photos |" in card and "| P052 | 1.000 | — |" in card and "| FreeSans | — | 0.500 |" in card
    assert "| lines | — | — | (not run) |" in card  # the other evals as before


def test_train_families_are_the_cpu_recipes_fonts():
    """TRAIN_FAMILIES (the families the realistic rows draw as "seen") are exactly the ones
    presets/cpu.toml trains on, and no held-out family is among them: change one, change both."""
    from nanoocr.configurator import read_preset
    fonts = read_preset("cpu")["synth_fonts"].split(",")
    assert tuple(fonts) == R.TRAIN_FAMILIES
    assert not set(R.HELD_OUT_FAMILIES) & set(fonts)
