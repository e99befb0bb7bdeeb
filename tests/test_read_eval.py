"""
The user-facing programs on a small random model saved as a real checkpoint: `nanoocr read`
(files, directories, globs, a corrupt image, no model), `nanoocr export` -> read, `nanoocr eval`
(metrics, Fox and OmniDocBench outputs, Tesseract side by side) and `nanoocr sample`.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from nanoocr import metrics, reader
from nanoocr.checkpoint_manager import (
    is_export_dir,
    load_model,
    save_checkpoint,
    save_tokenizer_once,
)
from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
from nanoocr.engine import generate
from nanoocr.gpt import GPTConfig
from nanoocr.image_process import process_for_encoder
from nanoocr.model import build_vlm
from nanoocr.reader import strip_views, trained_max_words
from nanoocr.strips import join_lines
from nanoocr.tokenizer import Tokenizer
from scripts import cli
from scripts import export as export_script
from scripts import read as read_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODE = [32, 128]  # the "training" mode stored in the checkpoint: read/eval must default to it
WORDS = ["hello world", "total cash", "the lazy dog", "OCR this"]


pytestmark = pytest.mark.usefixtures("one_thread")


def text_image(text, size=(256, 48)):
    """Black text on white, large and clean (Tesseract must read it)."""
    im = Image.new("RGB", size, "white")
    font = ImageFont.load_default(size=26)
    ImageDraw.Draw(im).text((8, 8), text, fill="black", font=font)
    return im


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A base dir holding one trained-looking checkpoint (random weights), + its path."""
    root = tmp_path_factory.mktemp("readbase")
    tok = Tokenizer.train_from_iterator(iter([" ".join(WORDS) + " Free OCR. receipts 0123456789"] * 50), 300)
    torch.manual_seed(0)
    enc = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    gpt = GPTConfig(sequence_len=96, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=4, n_kv_head=4, n_embd=enc.out_dim)
    model = build_vlm(enc, gpt, tok.image_id, proj_std=0.05)
    torch.nn.init.normal_(model.gpt.lm_head.weight, std=0.5)  # decisive greedy choices (see test_engine)
    ckpt = root / "vis_tok_checkpoints" / "t"
    meta = {"model_config": model.config, "user_config": {"mode": MODE, "data": "synth", "seed": 0}, "step": 3}
    save_checkpoint(str(ckpt), 3, model.state_dict(), None, meta)
    save_tokenizer_once(str(ckpt), tok)
    return str(root), str(ckpt)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder: two good images (one in a subfolder), a corrupt .png, a non-image file."""
    d = tmp_path_factory.mktemp("imgs")
    text_image(WORDS[0]).save(d / "a.png")
    (d / "sub").mkdir()
    text_image(WORDS[1]).save(d / "sub" / "b.jpg")
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (d / "notes.txt").write_text("not an image")
    return d


def expected_text(ckpt, path, max_tokens, whole=False):
    """What read must print: generate() on the image in the checkpoint's training mode. These images
    are not 32x128, so read first cuts them into strips (reader.strip_views) unless --whole."""
    model, tok, meta = load_model(ckpt)
    image = Image.open(path).convert("RGB")
    if whole:
        views = [(0, process_for_encoder(image, tuple(MODE), model.encoder.config))]
    else:
        views = strip_views(model, image, tuple(MODE), trained_max_words(meta))
    outs = generate(model, tok, [p for _, p in views], "Free OCR.", max_tokens=max_tokens, no_repeat_ngram_size=30,
                    no_repeat_window=90)
    return outs[0]["text"] if len(views) == 1 else join_lines([o["text"] for o in outs], [li for li, _ in views])


def test_read_flags_take_the_configurator_spelling_and_the_old_one_for_now(capsys):
    new = read_script.parse_args(["x.png", "--max_tokens", "5", "--batch_size", "2", "--no_repeat_ngram", "3",
                                  "--no_repeat_window", "4"])
    old = read_script.parse_args(["x.png", "--max-tokens", "5", "--batch-size", "2", "--no-repeat-ngram", "3",
                                  "--no-repeat-window", "4"])
    assert vars(new) == vars(old) and (new.max_tokens, new.batch_size, new.no_repeat_ngram) == (5, 2, 3)
    with pytest.raises(SystemExit):
        read_script.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max_tokens MAX_TOKENS, --max-tokens MAX_TOKENS" in help_text and "aliases until the next release" in help_text


def test_read_images_is_the_one_path(base, images):
    # paths and PIL images in, one record per input in input order, errors in place naming the file
    model, tok, meta = load_model(base[1])
    pil = Image.open(images / "sub" / "b.jpg").convert("RGB")
    inputs = [str(images / "a.png"), str(images / "bad.png"), pil, "nowhere/*.png"]
    recs = list(reader.read_images(model, tok, inputs, tuple(MODE), names=["a", "bad", "b", "glob"],
                                   errors=[None, None, None, "no image files match this pattern"], batch_size=2,
                                   max_words=trained_max_words(meta), max_tokens=6))
    assert [r["image"] for r in recs] == ["a", "bad", "b", "glob"]
    assert set(recs[1]) == {"image", "page", "error"} and recs[1]["error"].startswith("bad: ")
    assert recs[3] == {"image": "glob", "page": None, "error": "no image files match this pattern"}
    assert recs[0]["text"] == expected_text(base[1], images / "a.png", 6)
    assert recs[2]["text"] == expected_text(base[1], images / "sub" / "b.jpg", 6)
    assert all(r["views"] >= 1 and r["vision_tokens"] >= 1 and r["seconds"] >= 0 for r in (recs[0], recs[2]))
    # streaming, as the server reads (one piece at a time): one call per token, each text so far
    # (the pieces so far, joined by line) a prefix of the final text (up to a character a later
    # token completes, shown as U+FFFD until then)
    snapshots = []
    out, = reader.read_images(model, tok, [pil], tuple(MODE), batch_size=1, max_words=trained_max_words(meta),
                              max_tokens=6, callback=lambda i, t, text: snapshots.append((i, text)))
    assert out["text"] == recs[2]["text"] and len(snapshots) == out["num_tokens"] > 0
    assert all(i == 0 and out["text"].startswith(text.rstrip("\ufffd")) for i, text in snapshots)
    assert reader.default_max_tokens(model) == 96  # the model's sequence_len: what read uses unless told


def test_read_one_image_prints_plain_text_with_the_newest_model(base, images, monkeypatch, capsys):
    monkeypatch.setenv("NANOOCR_BASE_DIR", base[0])  # --model defaults to the newest checkpoint here
    assert read_script.main([str(images / "a.png"), "--max_tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out == expected_text(base[1], images / "a.png", 8) + "\n"


def test_read_whole_stretches_the_image_to_the_strip(base, images, capsys):
    assert read_script.main([str(images / "a.png"), "--model", base[1], "--max_tokens", "8", "--whole"]) == 0
    assert capsys.readouterr().out == expected_text(base[1], images / "a.png", 8, whole=True) + "\n"


def test_read_cuts_a_paragraph_into_strips(base, tmp_path, capsys):
    # three lines of two words: read reports how many strips it read and keeps the line breaks
    im = Image.new("RGB", (300, 130), "white")
    font = ImageFont.load_default(size=22)
    for i, line in enumerate(["hello world", "total cash", "lazy dog"]):
        ImageDraw.Draw(im).text((10, 10 + 40 * i), line, fill="black", font=font)
    im.save(tmp_path / "para.png")
    assert read_script.main([str(tmp_path / "para.png"), "--model", base[1], "--max_tokens", "3",
                             "--jsonl", str(tmp_path / "o.jsonl")]) == 0
    rec = json.loads((tmp_path / "o.jsonl").read_text())
    assert rec["strips"] >= 3 and rec["text"].count("\n") == 2
    assert rec["text"] == expected_text(base[1], tmp_path / "para.png", 3)


def test_read_directory_with_a_corrupt_image(base, images, tmp_path):
    # the real entry point, as a user runs it: exit status 1, error record, the rest read
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "scripts.read", str(images), str(tmp_path / "missing.png"),
                           "--model", base[1], "--max_tokens", "6", "--batch_size", "2", "--jsonl", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    names = [os.path.relpath(r["image"], images) if "missing" not in r["image"] else "missing" for r in recs]
    assert names == ["a.png", "bad.png", os.path.join("sub", "b.jpg"), "missing"]  # sorted, recursive, no .txt
    bad, missing = recs[1], recs[3]
    assert set(bad) == {"image", "error"} and "bad.png" in bad["error"]
    assert set(missing) == {"image", "error"}
    for r in (recs[0], recs[2]):
        assert set(r) >= {"image", "text", "tokens", "seconds"} and "error" not in r
        assert 0 < r["tokens"] <= 6 and r["seconds"] > 0
    assert recs[0]["text"] == expected_text(base[1], images / "a.png", 6)
    assert "2/4 pages" in proc.stderr


def test_read_jsonl_resumes_a_run_and_never_truncates(base, images, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    a = json.dumps({"image": str(images / "a.png"), "text": "from the first run", "tokens": 1, "seconds": 0.1})
    out.write_text(a + "\n" + '{"image": "' + str(images / "sub"))  # a run killed mid-line after one image
    assert read_script.main([str(images), "--model", base[1], "--max_tokens", "4", "--jsonl", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already holds 1 of these images; reading the other 2" in err
    lines = out.read_text().splitlines()
    assert lines[0] == a and lines[1] == '{"image": "' + str(images / "sub")  # kept as they were
    recs = [json.loads(line) for line in lines[2:]]
    assert [os.path.basename(r["image"]) for r in recs] == ["bad.png", "b.jpg"] and "error" in recs[0]
    # a second rerun skips every image with a text; the error one is tried again and appended
    assert read_script.main([str(images), "--model", base[1], "--max_tokens", "4", "--jsonl", str(out)]) == 1
    assert "reading the other 1" in capsys.readouterr().err
    again = out.read_text().splitlines()
    assert again[:len(lines)] == lines and len(again) == len(lines) + 1 and "bad.png" in again[-1]


def test_read_reports_skipped_files_fifos_and_odd_file_names(base, tmp_path, capsys):
    import signal
    d = tmp_path / "mixed"
    (d / ".git").mkdir(parents=True)
    text_image(WORDS[0]).save(d / "a.png")
    text_image(WORDS[0]).save(d / ".git" / "x.png")
    (d / "notes.txt").write_text("x")
    (d / "scan.heic").write_bytes(b"x")
    os.mkfifo(d / "pipe.png")  # opening it would wait for a writer forever
    odd = os.path.join(os.fsencode(d), b"caf\xe9.png")  # a Latin-1 file name: not UTF-8
    text_image(WORDS[1]).save(odd.decode("utf-8", "surrogateescape"))
    out = tmp_path / "out.jsonl"
    signal.alarm(120)  # a hang on the FIFO fails the test instead of stalling the suite
    try:
        code = read_script.main([str(d), "--model", base[1], "--max_tokens", "4", "--jsonl", str(out)])
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert code == 1
    recs = {os.path.basename(r["image"]): r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert sorted(recs) == ["a.png", "caf\\xe9.png", "pipe.png"]
    assert "text" in recs["a.png"] and "text" in recs["caf\\xe9.png"]
    assert "not a regular file (a FIFO)" in recs["pipe.png"]["error"]
    assert "skipped 2 files that are not images by extension (.heic, .txt)" in err
    assert "skipped 1 hidden files and folders" in err and ".git" in err
    # the odd name is matched on a rerun like any other
    assert read_script.main([str(d), "--model", base[1], "--max_tokens", "4", "--jsonl", str(out)]) == 1
    assert "already holds 2 of these images; reading the other 1" in capsys.readouterr().err


def test_an_unexpected_error_on_one_image_is_its_record_and_the_rest_are_read(base, images, monkeypatch):
    model, tok, meta = load_model(base[1])
    paths = [str(images / "a.png"), str(images / "sub" / "b.jpg"), str(images / "a.png")]
    real_open, real_generate = reader.open_pages, reader.read_strips

    def open_pages(src, *args, **kwargs):  # a bug that one image triggers while loading
        if str(src).endswith("b.jpg"):
            raise ZeroDivisionError("division by zero")
        return real_open(src, *args, **kwargs)
    monkeypatch.setattr(reader, "open_pages", open_pages)
    recs = list(reader.read_images(model, tok, paths, tuple(MODE), max_tokens=4, batch_size=3))
    assert "text" in recs[0] and "text" in recs[2]
    assert set(recs[1]) == {"image", "page", "error"} and recs[1]["image"] == paths[1]
    assert recs[1]["error"].startswith("unexpected ZeroDivisionError: division by zero (at test_read_eval.py:")

    def read_strips(model, tokenizer, images, prompts, **kwargs):  # ... and one that breaks generation
        if "BOOM" in prompts:
            raise RuntimeError("kaboom")
        return real_generate(model, tokenizer, images, prompts, **kwargs)
    monkeypatch.setattr(reader, "open_pages", real_open)
    monkeypatch.setattr(reader, "read_strips", read_strips)
    recs = list(reader.read_images(model, tok, paths, tuple(MODE), ["Free OCR.", "BOOM", "Free OCR."],
                                   max_tokens=4, batch_size=3))
    assert "text" in recs[0] and "text" in recs[2] and recs[0]["text"] == recs[2]["text"]
    assert "unexpected RuntimeError while generating: kaboom" in recs[1]["error"]


def test_read_globs_and_json_lines_on_stdout(base, images, capsys):
    code = read_script.main([str(images / "**" / "*.*g"), "--model", base[1], "--max_tokens", "4"])
    lines = capsys.readouterr().out.splitlines()
    recs = [json.loads(line) for line in lines]
    assert sorted(os.path.basename(r["image"]) for r in recs) == ["a.png", "b.jpg", "bad.png"]
    assert code == 1 and sum("error" in r for r in recs) == 1


def test_read_without_a_model_says_how_to_train_one(images, capsys):
    assert read_script.main([str(images / "a.png")]) == 2  # the test's base dir is empty
    assert "nanoocr train" in capsys.readouterr().err


def test_read_rejects_unknown_flags_and_bad_modes(base, images, capsys):
    with pytest.raises(SystemExit) as e:
        read_script.main([str(images / "a.png"), "--bogus"])
    assert e.value.code == 2 and "--bogus" in capsys.readouterr().err
    assert read_script.main([str(images / "a.png"), "--model", base[1], "--mode", "30x100"]) == 2
    assert "stride" in capsys.readouterr().err


def test_export_then_read_gives_the_same_text(base, images, tmp_path, capsys):
    out_dir = tmp_path / "exported"
    assert export_script.main([base[1], str(out_dir)]) == 0
    assert is_export_dir(str(out_dir)) and (out_dir / "tokenizer" / "tokenizer.json").is_file()
    assert not (out_dir / "tokenizer" / "tokenizer.pkl").exists()  # an export carries data only
    config = json.loads((out_dir / "config.json").read_text())
    assert config["user_config"]["mode"] == MODE and config["step"] == 3
    m1, _, _ = load_model(base[1])
    m2, tok2, meta2 = load_model(str(out_dir))
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert meta2["user_config"]["mode"] == MODE
    capsys.readouterr()
    args = [str(images / "a.png"), str(images / "sub" / "b.jpg"), "--max_tokens", "8"]
    assert read_script.main(args + ["--model", base[1]]) == 0
    from_ckpt = capsys.readouterr().out
    assert read_script.main(args + ["--model", str(out_dir)]) == 0
    from_export = capsys.readouterr().out
    texts = lambda out: [json.loads(line)["text"] for line in out.splitlines()]
    assert texts(from_ckpt) == texts(from_export) and len(texts(from_ckpt)) == 2
    # never overwrite a directory that is not an export
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert export_script.main([base[1], str(other)]) == 2
    assert (other / "keep.txt").read_text() == "x"
    # a bf16 export loads back into the fp32 model (half the bytes)
    assert export_script.main([base[1], str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    m3, _, _ = load_model(str(tmp_path / "bf16"))
    w = "gpt.lm_head.weight"
    assert m3.state_dict()[w].dtype == torch.float32
    assert torch.equal(m3.state_dict()[w], s1[w].bfloat16().float())


def run_cli(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv
    return cli.main(list(argv))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The same three images as a JSONL dataset, a Fox JSON and an OmniDocBench JSON."""
    d = tmp_path_factory.mktemp("data")
    (d / "images").mkdir()
    for i, w in enumerate(WORDS[:3]):
        text_image(w).save(d / "images" / f"p{i}.png")
    with open(d / "data.jsonl", "w") as f:
        for i, w in enumerate(WORDS[:3]):
            f.write(json.dumps({"id": f"s{i}", "image": f"images/p{i}.png", "prompt": "<image>\nFree OCR.", "answer": w}) + "\n")
    fox = [{"image": f"p{i}.png", "conversations": [{"from": "human", "value": "<image>\nOCR this image."},
                                                     {"from": "gpt", "value": w}]} for i, w in enumerate(WORDS[:3])]
    (d / "fox.json").write_text(json.dumps(fox))
    pages = [{"layout_dets": [{"category_type": "text_block", "order": 0, "text": w, "anno_id": 0}],
              "page_info": {"image_path": f"p{i}.png", "width": 256, "height": 48}} for i, w in enumerate(WORDS[:3])]
    (d / "omnidoc.json").write_text(json.dumps(pages))
    return d


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_eval_metrics_and_fox_outputs(base, dataset, tmp_path, monkeypatch, capsys):
    from tasks import fox
    out, fox_out = tmp_path / "preds.jsonl", tmp_path / "fox_preds.json"
    assert run_cli(monkeypatch, "eval", f"--model={base[1]}", f"--data={dataset / 'fox.json'}",
                   f"--image_dir={dataset / 'images'}", "--max_tokens=6", f"--out={out}", f"--fox_out={fox_out}") == 0
    printed = capsys.readouterr().out
    recs = read_jsonl(out)
    assert [r["ref"] for r in recs] == WORDS[:3]
    assert all(r["vision_tokens"] == 2 * 8 and r["answer_tokens"] > 0 and r["tokens"] <= 6 for r in recs)
    # Fox's layout, round-tripped through the reader: label = ground truth, answer = our output
    foxed = fox.read_predictions(fox_out)
    assert [r["pred"] for r in foxed] == [r["pred"] for r in recs] and [r["ref"] for r in foxed] == WORDS[:3]
    m = json.loads((tmp_path / "preds.metrics.json").read_text())
    preds = [r["pred"] for r in recs]
    assert m["model"]["cer"] == pytest.approx(metrics.cer(preds, WORDS[:3]))
    assert m["model"]["n"] == 3 and m["failed"] == 0 and m["model"]["compression_buckets"]
    assert "CER" in printed and "Fox precision" in printed and "compression" in printed


def test_eval_omnidocbench_markdown_and_a_corrupt_image(base, dataset, tmp_path, monkeypatch, capsys):
    data = tmp_path / "odb"
    shutil.copytree(dataset / "images", data / "images")
    shutil.copy(dataset / "omnidoc.json", data / "omnidoc.json")
    (data / "images" / "p2.png").write_bytes(b"garbage")  # one unreadable page
    md_dir, out = tmp_path / "md", tmp_path / "odb.jsonl"
    assert run_cli(monkeypatch, "eval", f"--model={base[1]}", f"--data={data / 'omnidoc.json'}",
                   "--max_tokens=5", f"--out={out}", f"--md_dir={md_dir}") == 0
    recs = read_jsonl(out)
    assert "error" in recs[2] and "p2.png" in recs[2]["error"]
    assert sorted(os.listdir(md_dir)) == ["p0.md", "p1.md"]
    for i in (0, 1):
        assert (md_dir / f"p{i}.md").read_text() == recs[i]["pred"]
    m = json.loads((tmp_path / "odb.metrics.json").read_text())
    assert m["failed"] == 1 and m["model"]["n"] == 2
    assert "unreadable" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("tesseract") is None,
                    reason="the tesseract binary is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
def test_eval_tesseract_side_by_side(base, dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.jsonl"
    assert run_cli(monkeypatch, "eval", f"--model={base[1]}", f"--data={dataset / 'data.jsonl'}", "--max_tokens=5",
                   "--tesseract=True", "--tesseract_psm=7", f"--out={out}") == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "nanoocr" in line)
    assert "tesseract" in header
    cer_row = next(line for line in printed.splitlines() if line.startswith("CER"))
    assert len(cer_row.split()) == 3  # label + one number per system
    recs = read_jsonl(out)
    assert all("tesseract_pred" in r and r["tesseract_seconds"] > 0 for r in recs)
    m = json.loads((tmp_path / "t.metrics.json").read_text())
    # clean large text: Tesseract really read these images (a random model cannot)
    assert m["tesseract"]["cer"] < 0.3, [r["tesseract_pred"] for r in recs]
    assert m["tesseract"]["cer"] == pytest.approx(metrics.cer([r["tesseract_pred"] for r in recs], WORDS[:3]))


def fake_tesseract(tmp_path, action_on_call_2):
    """A `tesseract` on PATH that prints "hello" except on its second call, where it runs
    action_on_call_2 (shell): fail, or kill the eval that called it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tesseract"
    script.write_text(f"""#!/bin/sh
n=$(cat "{tmp_path}/calls" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "{tmp_path}/calls"
if [ $n -eq 2 ]; then {action_on_call_2}; fi
echo hello
""")
    script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_eval_keeps_every_prediction_when_tesseract_fails_on_one(base, dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", fake_tesseract(tmp_path, "echo 'Error: cannot read image' >&2; exit 1"))
    out = tmp_path / "t.jsonl"
    assert run_cli(monkeypatch, "eval", f"--model={base[1]}", f"--data={dataset / 'data.jsonl'}", "--max_tokens=5",
                   "--tesseract=True", f"--out={out}") == 0
    recs = read_jsonl(out)
    assert len(recs) == 3 and all("pred" in r for r in recs)
    assert recs[0]["tesseract_pred"] == recs[2]["tesseract_pred"] == "hello"
    assert "cannot read image" in recs[1]["tesseract_error"] and "tesseract_pred" not in recs[1]
    m = json.loads((tmp_path / "t.metrics.json").read_text())
    assert m["model"]["n"] == 3 and m["tesseract"]["n"] == 2 and m["tesseract_failed"] == 1
    assert "tesseract failed on" in capsys.readouterr().err


def test_a_killed_eval_keeps_what_it_wrote(base, dataset, tmp_path):
    """Tesseract's second call kills the eval (SIGKILL: no handler, no cleanup runs): the first
    image's full record is on disk already."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=fake_tesseract(tmp_path, "kill -9 $PPID; sleep 5"),
               NANOOCR_BASE_DIR=str(tmp_path / "b"))
    out = tmp_path / "k.jsonl"
    p = subprocess.run([sys.executable, "-m", "scripts.vision_eval", f"--model={base[1]}",
                        f"--data={dataset / 'data.jsonl'}", "--max_tokens=5", "--tesseract=True", f"--out={out}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    recs = read_jsonl(out)
    assert len(recs) == 1 and recs[0]["ref"] == WORDS[0] and recs[0]["tesseract_pred"] == "hello"


def test_eval_default_outputs_differ_for_same_named_model_dirs(monkeypatch, tmp_path):
    from scripts.vision_eval import default_out_path
    sys.modules.pop("scripts.vision_eval")  # `nanoocr eval` runs it as __main__ (runpy warns if it is imported)
    a = default_out_path(str(tmp_path / "vis_tok_checkpoints" / "cpu"), "synth:line (val)")
    b = default_out_path(str(tmp_path / "vis_mid_checkpoints" / "cpu"), "synth:line (val)")
    assert a != b and os.path.basename(a) == "vis_tok_checkpoints_cpu-synth_line.jsonl"


def test_eval_prose_reads_paragraphs_through_the_strip_cutter(base, tmp_path, monkeypatch, capsys):
    out = tmp_path / "prose.jsonl"
    assert run_cli(monkeypatch, "eval", f"--model={base[1]}", "--data=prose", "--limit=2", "--max_tokens=3",
                   f"--out={out}") == 0
    recs = read_jsonl(out)
    assert len(recs) == 2 and all(r["strips"] >= 2 and r["ref"].count("\n") == r["pred"].count("\n") for r in recs)
    # vision tokens count every strip read (2 x 8 per 32x128 strip)
    assert all(r["vision_tokens"] == 16 * r["strips"] for r in recs)


def test_sample_prints_expected_generated_loss_and_exact_count(base, dataset, monkeypatch, capsys):
    assert run_cli(monkeypatch, "sample", f"--model={base[1]}", f"--data={dataset / 'data.jsonl'}", "--limit=2",
                   "--max_tokens=4") == 0
    printed = capsys.readouterr().out
    assert printed.count("EXPECTED:") == 2 and printed.count("GENERATED:") == 2
    assert "loss " in printed and "overlap" in printed and "/2 exact" in printed
    assert repr(WORDS[0]) in printed


def test_eval_and_sample_take_a_weighted_mixture_with_the_renderer_first(base, dataset, tmp_path, monkeypatch, capsys):
    """The --data grammar of training works in eval and sample: synth:3,data.jsonl:1 reads 2 renderer
    strips then 2 dataset images (a weight only shapes training); synth:2 is the renderer, not a kind "2"."""
    out = tmp_path / "mix.jsonl"
    assert run_cli(monkeypatch, "eval", f"--model={base[1]}", f"--data=synth:3,{dataset / 'data.jsonl'}:1",
                   "--limit=2", "--max_tokens=3", f"--out={out}") == 0
    recs = read_jsonl(out)
    assert [r["id"] for r in recs] == ["synth-val-line-0", "synth-val-line-1", "s0", "s1"]
    assert json.loads((tmp_path / "mix.metrics.json").read_text())["model"]["n"] == 4
    capsys.readouterr()
    assert run_cli(monkeypatch, "sample", f"--model={base[1]}", "--data=synth:2", "--limit=2", "--max_tokens=3") == 0
    printed = capsys.readouterr().out
    assert "synth:line (val)" in printed and printed.count("EXPECTED:") == 2 and "/2 exact" in printed
