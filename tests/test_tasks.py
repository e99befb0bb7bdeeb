"""
Dataset readers (tasks/) and scripts/prepare_data.py, on small fixtures each
test writes itself, plus the real tier-1 JSON bundled in tasks/tier1. All CPU, a few seconds in total.
"""

import io
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from PIL import Image

from nanoocr.configurator import read_preset
from nanoocr.modes import DEFAULT_PROMPT
from scripts import prepare_data
from tasks import common, fox, image_folder, ocr_json, omnidocbench, parquet
from tasks.common import DataError
from tasks.sources import build_source, resolve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png_bytes(color=(200, 10, 10), size=(8, 6), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w", encoding=None if isinstance(data, bytes) else "utf-8") as f:
        f.write(data)
    return path


def find_tier1():
    """The bundled tier-1 set, by the name presets and --data use."""
    path = resolve("tier1")
    assert path == os.path.join(REPO, "tasks", "tier1", "overfit_dataset.json") and os.path.isfile(path), path
    return path


# -----------------------------------------------------------------------------
# prompt convention

def test_split_and_join_prompt():
    assert common.split_prompt("<image>\n<|grounding|>OCR this image.") == ("", "<|grounding|>OCR this image.")
    assert common.split_prompt("Free OCR.") == ("", "Free OCR.")  # no marker: image first
    assert common.split_prompt("Look: <image>\nwhat?") == ("Look: ", "what?")
    with pytest.raises(DataError, match="2 <image> markers"):
        common.split_prompt("<image><image>x")
    # join is the inverse for marker-first prompts, and keeps text before the image
    assert common.join_prompt({"prompt": "Parse the figure."}) == "<image>\nParse the figure."
    assert common.join_prompt({"prompt": "what?", "prompt_before": "Look: "}) == "Look: <image>\nwhat?"


# -----------------------------------------------------------------------------
# the original project's JSON / JSONL

def test_tier1_json_real_fixture():
    path = find_tier1()
    skips = common.new_skips()
    samples = list(ocr_json.read(path, skips=skips))
    assert len(samples) == 10 and not skips
    tier1 = os.path.dirname(path)
    raw = json.load(open(path))
    for s, r in zip(samples, raw):
        assert set(s) == {"id", "image", "prompt", "answer", "source"}  # no prompt_before: <image> is first
        assert s["id"] == r["id"] and s["answer"] == r["answer"] and s["source"] == r["source"]
        assert s["image"] == os.path.join(tier1, r["image"]) and os.path.isfile(s["image"])
        assert r["prompt"] == "<image>\n" + s["prompt"]
    assert Counter(s["prompt"] for s in samples) == {"<|grounding|>OCR this image.": 4, "Parse the figure.": 3,
                                                     "Describe this image in detail.": 3}
    assert samples[0]["id"] == "receipt_000" and samples[0]["answer"].startswith("tan woon yann\n")


def test_tier1_by_name(tmp_path, monkeypatch):
    """--data=tier1 (and presets/tier1.toml) name the bundled set from any working directory; a
    local file of that name is not shadowed."""
    monkeypatch.chdir(tmp_path)
    preset = read_preset("tier1")
    assert preset["data"] == "tier1"
    src = build_source(preset["data"], "train", seed=0)
    ids = {src(i)["id"] for i in range(10)}  # one epoch: every record once, reshuffled
    assert len(ids) == 10 and "receipt_000" in ids
    assert all(os.path.isfile(src(i)["image"]) for i in range(10))
    write(str(tmp_path / "tier1"), "mine")
    assert resolve("tier1") == "tier1"


def test_json_and_jsonl_read_the_same(tmp_path):
    write(str(tmp_path / "img" / "a.png"), png_bytes())
    write(str(tmp_path / "img" / "b.jpg"), png_bytes(fmt="JPEG"))
    recs = [{"id": "a", "image": "img/a.png", "prompt": "<image>\nFree OCR.", "answer": "hello\nworld", "source": "s1"},
            {"image": "img/b.jpg", "answer": "no prompt, no id, no source", "type": "ignored"}]
    write(str(tmp_path / "d.json"), json.dumps(recs))
    write(str(tmp_path / "d.jsonl"), "\n".join(json.dumps(r) for r in recs) + "\n\n")
    a = list(ocr_json.read(str(tmp_path / "d.json")))
    b = list(ocr_json.read(str(tmp_path / "d.jsonl")))
    assert len(a) == 2
    assert a[0] == {"id": "a", "image": str(tmp_path / "img" / "a.png"), "prompt": "Free OCR.",
                    "answer": "hello\nworld", "source": "s1"}
    assert a[1]["id"] == "d:1" and a[1]["prompt"] == DEFAULT_PROMPT and a[1]["source"] == "d.json"
    for x, y in zip(a, b):  # identical apart from the default source, which names the file
        assert {k: v for k, v in x.items() if k != "source"} == {k: v for k, v in y.items() if k != "source"}


def test_json_bad_records_are_counted_skips_naming_the_file(tmp_path, capsys):
    write(str(tmp_path / "ok.png"), png_bytes())
    lines = [json.dumps({"id": "good", "image": "ok.png", "prompt": "<image>\nFree OCR.", "answer": "x"}),
             json.dumps({"id": "gone", "image": "missing_pic.png", "answer": "x"}),
             json.dumps({"id": "blank", "image": "ok.png", "answer": "  \n"}),
             json.dumps({"id": "none", "image": "ok.png", "answer": None}),
             "{not json",
             json.dumps({"id": "two", "image": "ok.png", "prompt": "<image><image>", "answer": "x"})]
    path = write(str(tmp_path / "bad.jsonl"), "\n".join(lines))
    skips = common.new_skips()
    samples = list(ocr_json.read(path, skips=skips))
    assert [s["id"] for s in samples] == ["good"]
    assert skips == {"missing_image": 1, "empty_answer": 2, "bad_record": 1, "bad_prompt": 1}
    err = capsys.readouterr().err
    assert "missing_pic.png" in err and f"{path}:3: empty_answer" in err and f"{path}:5: bad_record" in err
    # strict: the first bad record is fatal and the message names the file and line
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing_image.*missing_pic\.png"):
        list(ocr_json.read(path, strict=True))


# -----------------------------------------------------------------------------
# image folder

def test_image_folder_recursive_sorted_with_skips(tmp_path, capsys):
    root = tmp_path / "scans"
    write(str(root / "b.png"), png_bytes())
    write(str(root / "b.txt"), "line one\nline two\n")  # the editor's final newline is dropped
    write(str(root / "a.jpg"), png_bytes(fmt="JPEG"))
    write(str(root / "a.txt"), "alpha")
    write(str(root / "sub" / "c.PNG"), png_bytes())
    write(str(root / "sub" / "c.txt"), "gamma\r\n")
    write(str(root / "sub" / "no_text.png"), png_bytes())           # no transcript
    write(str(root / "sub" / "empty.png"), png_bytes())
    write(str(root / "sub" / "empty.txt"), "\n")                    # empty transcript
    write(str(root / "notes.txt"), "a stray text file is not a sample")
    skips = common.new_skips()
    samples = list(image_folder.read(str(root), skips=skips))
    assert [s["id"] for s in samples] == ["a.jpg", "b.png", "sub/c.PNG"]
    assert [s["answer"] for s in samples] == ["alpha", "line one\nline two", "gamma"]
    assert all(s["prompt"] == "Free OCR." and s["source"] == "scans" for s in samples)
    assert samples[2]["image"] == str(root / "sub" / "c.PNG")
    assert skips == {"missing_answer": 1, "empty_answer": 1}
    err = capsys.readouterr().err
    assert "no_text.png" in err and "empty.txt" in err
    with pytest.raises(DataError, match="empty.txt: empty_answer"):
        list(image_folder.read(str(root), strict=True))  # empty.png sorts before no_text.png


def test_readers_do_not_decode_images(tmp_path):
    # a corrupt image is the dataloader's to skip (it decodes, in workers, with load_image's errors);
    # a reader that opened images would drop it here and cost a decode per sample on the main thread
    write(str(tmp_path / "junk.png"), b"not a png at all")
    write(str(tmp_path / "junk.txt"), "text")
    (s,) = list(image_folder.read(str(tmp_path)))
    assert s["image"] == str(tmp_path / "junk.png")


# -----------------------------------------------------------------------------
# parquet

def write_parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_columns_structs_and_skips(tmp_path, capsys):
    a, b = png_bytes((1, 2, 3)), png_bytes((4, 5, 6), fmt="JPEG")
    write(str(tmp_path / "shards" / "side.png"), png_bytes())
    write_parquet(str(tmp_path / "shards" / "part-0.parquet"), {
        "jpg": [a, b, b"", a],
        "transcript": ["first", "second", "no image", ""],
        "key": ["k0", "k1", "k2", "k3"],
    })
    skips = common.new_skips()
    samples = list(parquet.read(str(tmp_path / "shards"), image_col="jpg", text_col="transcript", id_col="key", skips=skips))
    assert [(s["id"], s["image"], s["answer"], s["prompt"], s["source"]) for s in samples] == [
        ("k0", a, "first", "Free OCR.", "part-0"), ("k1", b, "second", "Free OCR.", "part-0")]
    assert skips == {"missing_image": 1, "empty_answer": 1}
    assert "part-0.parquet row 2" in capsys.readouterr().err
    # a wrong column name is a config error listing what the shard has
    with pytest.raises(DataError, match=r"no column\(s\) \['image', 'text'\]; it has \['jpg'"):
        list(parquet.read(str(tmp_path / "shards")))
    # Hugging Face Image structs (bytes, or a path relative to the shard) and FineVision turn lists
    write_parquet(str(tmp_path / "fv" / "x.parquet"), {
        "images": [[{"bytes": a, "path": None}], [{"bytes": None, "path": "../shards/side.png"}], [], [{"bytes": a}, {"bytes": b}]],
        "texts": [[{"user": "<image>\nRead it.", "assistant": "ANSWER 0"}, {"user": "q2", "assistant": "later turn"}],
                  [{"user": "Transcribe.", "assistant": "ANSWER 1"}], [{"user": "u", "assistant": "a"}],
                  [{"user": "u", "assistant": "a"}]],
    })
    skips = common.new_skips()
    s = list(parquet.read(str(tmp_path / "fv" / "*.parquet"), image_col="images", text_col="texts", skips=skips))
    assert [(x["id"], x["prompt"], x["answer"]) for x in s] == [("x:0", "Read it.", "ANSWER 0"), ("x:1", "Transcribe.", "ANSWER 1")]
    assert s[0]["image"] == a and s[1]["image"] == str(tmp_path / "shards" / "side.png")
    assert skips == {"missing_image": 1, "multi_image": 1}
    # an explicit prompt wins over the data's
    assert {x["prompt"] for x in parquet.read(str(tmp_path / "fv"), image_col="images", text_col="texts", prompt="P")} == {"P"}


# -----------------------------------------------------------------------------
# Fox

def test_fox_read_and_prediction_round_trip(tmp_path):
    img_dir = tmp_path / "en_pdf_png"
    write(str(img_dir / "en_1.png"), png_bytes())
    write(str(img_dir / "en_2.png"), png_bytes())
    gt = [{"image": "en_1.png", "conversations": [{"from": "human", "value": "<image>\nOCR this image."},
                                                   {"from": "gpt", "value": "Page one text."}]},
          {"image": "en_2.png", "conversations": [{"from": "human", "value": "<image>\nOCR this image."},
                                                   {"from": "gpt", "value": "Page two, line 1\nline 2"}]},
          {"image": "en_3.png", "conversations": [{"from": "human", "value": "<image>\nOCR this image."},
                                                   {"from": "gpt", "value": "its image is missing"}]},
          {"image": "en_4.png", "conversations": [{"from": "human", "value": "<image>\nno answer turn"}]}]
    path = write(str(tmp_path / "en_page_ocr.json"), json.dumps(gt))
    skips = common.new_skips()
    samples = list(fox.read(path, image_dir=str(img_dir), skips=skips))
    assert [(s["id"], s["prompt"], s["answer"]) for s in samples] == [
        ("en_1.png", "OCR this image.", "Page one text."), ("en_2.png", "OCR this image.", "Page two, line 1\nline 2")]
    assert samples[0]["image"] == str(img_dir / "en_1.png") and samples[0]["source"] == "en_page_ocr"
    assert skips == {"missing_image": 1, "bad_record": 1}
    with pytest.raises(DataError, match="en_3.png"):
        list(fox.read(path, image_dir=str(img_dir), strict=True))
    # predictions in Fox's own layout ("label" = ground truth, "answer" = model), and back
    preds = ["Page one text!", "Page two, line 1\nline 2"]
    out = fox.write_predictions(str(tmp_path / "out" / "results_final.json"), samples, preds)
    raw = json.load(open(out))
    assert raw[0] == {"image": "en_1.png", "question": "<image>\nOCR this image.", "label": "Page one text.",
                      "answer": "Page one text!"}
    back = fox.read_predictions(out)
    assert [(r["id"], r["pred"], r["ref"]) for r in back] == [(s["id"], p, s["answer"]) for s, p in zip(samples, preds)]


# -----------------------------------------------------------------------------
# OmniDocBench

def omnidoc_page(image):
    # blocks listed out of reading order; one ignored, a figure without text, a truncated paragraph
    return {
        "layout_dets": [
            {"category_type": "text_block", "order": 2, "anno_id": 10, "ignore": False, "text": "Second paragraph starts"},
            {"category_type": "title", "order": 0, "anno_id": 11, "ignore": False, "text": "The Title"},
            {"category_type": "header", "order": 1, "anno_id": 12, "ignore": True, "text": "running header"},
            {"category_type": "figure", "order": 3, "anno_id": 13, "ignore": False},
            {"category_type": "text_block", "order": 4, "anno_id": 14, "ignore": False, "text": "and ends here."},
            {"category_type": "table", "order": 5, "anno_id": 15, "ignore": False, "html": "<table><tr><td>1</td></tr></table>",
             "latex": "\\begin{tabular}1\\end{tabular}"},
            {"category_type": "equation_isolated", "order": 6, "anno_id": 16, "ignore": False, "latex": "$$E=mc^2$$"},
            {"category_type": "abandon", "order": None, "anno_id": 17, "ignore": False, "text": "unordered tail"},
            {"category_type": "text_block", "order": 1.5, "anno_id": 18, "ignore": False, "text": "First paragraph."},
        ],
        "page_info": {"page_no": 0, "height": 100, "width": 80, "image_path": image},
        "extra": {"relation": [{"source_anno_id": 10, "target_anno_id": 14, "relation_type": "truncated"},
                               {"source_anno_id": 15, "target_anno_id": 16, "relation": "parent_son"}]},
    }


def test_omnidocbench_reading_order_ignore_and_md_outputs(tmp_path):
    expected = ("The Title\n\nFirst paragraph.\n\nSecond paragraph starts and ends here.\n\n"
                "<table><tr><td>1</td></tr></table>\n\n$$E=mc^2$$\n\nunordered tail")
    assert omnidocbench.page_text(omnidoc_page("p.jpg")) == expected
    assert omnidocbench.page_text(omnidoc_page("p.jpg"), skip_categories=("abandon",)) == expected.rsplit("\n\n", 1)[0]
    write(str(tmp_path / "images" / "doc_a.jpg"), png_bytes(fmt="JPEG"))
    write(str(tmp_path / "images" / "doc_b.png"), png_bytes())
    blank = {"layout_dets": [{"category_type": "text_block", "order": 0, "ignore": True, "text": "all ignored"}],
             "page_info": {"image_path": "doc_b.png"}}
    path = write(str(tmp_path / "OmniDocBench.json"),
                 json.dumps([omnidoc_page("doc_a.jpg"), blank, omnidoc_page("doc_missing.jpg")]))
    skips = common.new_skips()
    samples = list(omnidocbench.read(path, skips=skips))
    assert len(samples) == 1 and samples[0]["id"] == "doc_a.jpg" and samples[0]["answer"] == expected
    assert samples[0]["image"] == str(tmp_path / "images" / "doc_a.jpg")
    assert samples[0]["prompt"] == omnidocbench.DEFAULT_PROMPT
    assert skips == {"empty_answer": 1, "missing_image": 1}
    # per-image markdown outputs, named as the benchmark's evaluator expects, and read back
    paths = omnidocbench.write_predictions(str(tmp_path / "md"), samples, ["# The Title\r\n\nrest"])
    assert paths == [str(tmp_path / "md" / "doc_a.md")]
    back = omnidocbench.read_predictions(str(tmp_path / "md"), samples)
    assert back == [{"id": "doc_a.jpg", "pred": "# The Title\r\n\nrest", "ref": expected}]


# -----------------------------------------------------------------------------
# prepare_data: any source -> data.jsonl + images/, read back identically

def image_bytes(sample):
    if isinstance(sample["image"], bytes):
        return sample["image"]
    with open(sample["image"], "rb") as f:
        return f.read()


def assert_same(original, converted):
    assert len(original) == len(converted) > 0
    for o, c in zip(original, converted):
        assert {k: o[k] for k in ("id", "prompt", "answer", "source")} == {k: c[k] for k in ("id", "prompt", "answer", "source")}
        assert o.get("prompt_before") == c.get("prompt_before")
        assert image_bytes(o) == image_bytes(c)


def test_prepare_parquet_round_trip(tmp_path, capsys):
    imgs = [png_bytes((i, 0, 0)) for i in range(3)] + [png_bytes((9, 9, 9), fmt="JPEG")]
    webp = png_bytes((5, 5, 5), fmt="WEBP")
    write_parquet(str(tmp_path / "pq" / "train-00000.parquet"), {
        "image": imgs + [b"definitely not an image", webp],
        "text": ["zero", "one\ntwo", "", "three", "corrupt", "webp page"],
    })
    summary = prepare_data.prepare("parquet", str(tmp_path / "pq"), str(tmp_path / "out"), prompt="<image>\\nRead.")
    assert summary["written"] == 4 and summary["skipped"] == {"empty_answer": 1, "unreadable_image": 1}
    original = [dict(s, prompt="Read.") for s in parquet.read(str(tmp_path / "pq"))]
    original = [s for s in original if s["answer"] != "corrupt"]
    converted = list(ocr_json.read(summary["out"]))
    assert_same(original[:3], converted[:3])
    # the webp page was decoded and stored as PNG with the same pixels
    assert converted[3]["image"].endswith(".png") and converted[3]["answer"] == "webp page"
    with Image.open(converted[3]["image"]) as a, Image.open(io.BytesIO(webp)) as b:
        assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
    recs = [json.loads(l) for l in open(summary["out"])]
    assert recs[0]["prompt"] == "<image>\nRead." and recs[0]["image"] == "images/000000_train-00000_0.png"
    assert recs[3]["image"].startswith("images/000003_")
    # an existing output is not silently replaced; --limit stops early
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_data.prepare("parquet", str(tmp_path / "pq"), str(tmp_path / "out"))
    assert prepare_data.prepare("parquet", str(tmp_path / "pq"), str(tmp_path / "out"), limit=2, overwrite=True)["written"] == 2


def test_prepare_folder_round_trip_via_cli(tmp_path):
    root = tmp_path / "scans"
    write(str(root / "p1.png"), png_bytes((1, 1, 1)))
    write(str(root / "p1.txt"), "first page\n")
    write(str(root / "deep" / "p 2.jpg"), png_bytes((2, 2, 2), fmt="JPEG"))
    write(str(root / "deep" / "p 2.txt"), "second page")
    write(str(root / "deep" / "orphan.png"), png_bytes())
    out = tmp_path / "prepared"
    r = subprocess.run([sys.executable, "-m", "scripts.prepare_data", "--source=folder", f"--input={root}",
                        f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 2 samples" in r.stdout and "missing_answer: 1" in r.stdout and "orphan.png" in r.stderr
    original = list(image_folder.read(str(root)))
    converted = list(ocr_json.read(str(out / "data.jsonl")))
    assert_same(original, converted)
    assert converted[1]["image"].endswith("_deep_p_2.jpg")  # ids with '/' and ' ' become safe file names


def test_prepare_keeps_text_before_the_image(tmp_path):
    # the project's own JSON as a source too, with a mid-prompt <image>: it must survive conversion
    write(str(tmp_path / "x.png"), png_bytes())
    write(str(tmp_path / "d.json"), json.dumps([{"id": "m", "image": "x.png", "prompt": "Page: <image>\nFree OCR.", "answer": "t"}]))
    summary = prepare_data.prepare("json", str(tmp_path / "d.json"), str(tmp_path / "o"))
    assert json.loads(open(summary["out"]).readline())["prompt"] == "Page: <image>\nFree OCR."
    assert_same(list(ocr_json.read(str(tmp_path / "d.json"))), list(ocr_json.read(summary["out"])))


def test_prose_samples_are_real_passages_in_unseen_fonts():
    from tasks.prose import FONTS, PASSAGES, prose_samples
    from tasks.realistic import HELD_OUT_FAMILIES, TRAIN_FAMILIES
    samples = prose_samples()
    assert list(FONTS) == list(HELD_OUT_FAMILIES)
    assert not set(TRAIN_FAMILIES) & set(HELD_OUT_FAMILIES)
    trained = set(read_preset("cpu")["synth_fonts"].split(","))
    assert not trained & set(HELD_OUT_FAMILIES), "the prose check must use families the CPU recipe never draws"
    # every passage in every font, each cut into paragraphs that rejoin to the passage
    for pi, passage in enumerate(PASSAGES):
        for fam in FONTS:
            paras = [s for s in samples if s["id"].startswith(f"prose-{pi}-{fam.replace(' ', '_')}-")]
            assert paras and " ".join(p["answer"].replace("\n", " ") for p in paras) == passage
            for p in paras:
                assert p["family"] == fam
                w, h = p["image"].size
                assert w > h > 30 and 1 <= p["answer"].count("\n") + 1 <= 4
    assert [s["id"] for s in prose_samples(limit=5)] == [s["id"] for s in samples[:5]]
