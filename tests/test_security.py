"""
A model directory is data, never code: a tokenizer.pkl or an optim_*.pt crafted to run code when
unpickled is refused by every program that opens one (read, eval, serve, export, training's
--init_from and --resume), with an error naming the file, and the code never runs (the marker file
it would create never appears). nanochat's own tokenizer.pkl still loads, as data, with the same ids.
"""

import io
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import FIXTURE_D2, REPO
from serve_fixtures import make_checkpoint, text_image

from nanoocr.checkpoint_manager import (
    CheckpointError,
    checkpoint_dir_for,
    load_file,
    load_model,
    save_checkpoint,
    save_export,
)
from nanoocr.tokenizer import Tokenizer, TokenizerError

pytestmark = pytest.mark.usefixtures("one_thread")


class RunsCode:
    """Unpickling this calls exec(): what a malicious model file does. The code creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def poison_tokenizer(ckpt, marker):
    """Replace the checkpoint's tokenizer by a tokenizer.pkl that runs code (no tokenizer.json: the
    pickle is what a loader would fall back to)."""
    tok_dir = os.path.join(ckpt, "tokenizer")
    for f in os.listdir(tok_dir):
        os.remove(os.path.join(tok_dir, f))
    with open(os.path.join(tok_dir, "tokenizer.pkl"), "wb") as f:
        pickle.dump(RunsCode(marker), f)


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    root = tmp_path_factory.mktemp("poisoned")
    ckpt = make_checkpoint(root)
    marker = str(root / "PWNED")
    poison_tokenizer(ckpt, marker)
    img = root / "a.png"
    text_image("hello world").save(img)
    return root, ckpt, marker, str(img)


def test_the_crafted_pickle_does_run_code_when_unpickled_plainly(tmp_path):
    """The test's premise: pickle.load on this file creates the marker (so its absence below means
    the loaders refused it, not that the payload is inert)."""
    marker = str(tmp_path / "m")
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert os.path.exists(marker)


def test_poisoned_tokenizer_is_refused_by_every_program(poisoned, tmp_path, capsys, monkeypatch):
    root, ckpt, marker, img = poisoned
    with pytest.raises(TokenizerError, match=r"tokenizer\.pkl: refused: the pickle names builtins\.exec"):
        Tokenizer.from_directory(os.path.join(ckpt, "tokenizer"))
    with pytest.raises(TokenizerError, match="refused"):
        load_model(ckpt)
    # --nanochat_dir + --nanochat_tokenizer: nanochat's GPT with the crafted tokenizer beside it
    from nanoocr.checkpoint_manager import load_nanochat_gpt
    with pytest.raises(TokenizerError, match="refused"):
        load_nanochat_gpt(os.path.join(FIXTURE_D2, "base_checkpoints", "d2"), os.path.join(ckpt, "tokenizer"))

    from scripts import cli
    from scripts import export as export_script
    from scripts import read as read_script
    from scripts import serve as serve_script
    assert read_script.main([img, "--model", ckpt]) == 2
    assert "refused" in capsys.readouterr().err
    assert export_script.main([ckpt, str(tmp_path / "exp")]) == 2
    assert "refused" in capsys.readouterr().err
    assert serve_script.main(["--model", ckpt, "--port", "0"]) == 2  # refuses before it binds a socket
    assert "refused" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"image": img, "answer": "hello world"}) + "\n")
    assert cli.main(["eval", f"--model={ckpt}", f"--data={data}", f"--out={tmp_path / 'p.jsonl'}"]) == 2
    assert "refused" in capsys.readouterr().err
    # training's --init_from, as users run it
    env = dict(os.environ, NANOOCR_BASE_DIR=str(root), OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train", f"--init_from={ckpt}", "--tag=x",
                        "--num_steps=1", "--dtype=float32"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "tokenizer.pkl: refused" in p.stderr, p.stderr[-2000:]
    # ... and a fresh run pointed at the tokenizer directory alone (--tokenizer_dir)
    p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train", f"--tokenizer_dir={ckpt}/tokenizer",
                        "--tag=y", "--num_steps=1", "--dtype=float32"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode != 0 and "tokenizer.pkl: refused" in p.stderr, p.stderr[-2000:]
    assert not os.path.exists(marker), "the crafted tokenizer.pkl ran code"


def test_poisoned_optimizer_state_is_refused_on_resume(tmp_path):
    marker = str(tmp_path / "PWNED")
    base = tmp_path / "base"
    from nanoocr.synth_text import corpus_iter
    Tokenizer.train_from_iterator(corpus_iter(max_chars=50_000), vocab_size=300).save(str(base / "tokenizer"))
    ckpt = checkpoint_dir_for("vis_tok", "evil", str(base))
    # a committed step whose optimiser file runs code when unpickled (model file: plain tensors)
    save_checkpoint(ckpt, 1, {"w": torch.zeros(2)}, {"optimizer": RunsCode(marker)}, {"step": 1})
    with pytest.raises(CheckpointError, match=r"optim_000001_rank0\.pt: refused.*would run code"):
        load_file(os.path.join(ckpt, "optim_000001_rank0.pt"))
    env = dict(os.environ, NANOOCR_BASE_DIR=str(base), OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train", "--tag=evil", "--resume=True",
                        "--gpt_depth=1", "--gpt_n_head=2", "--seq_len=96", "--device_batch_size=2",
                        "--total_batch_size=2", "--num_steps=2", "--dtype=float32", "--synth_kinds=line"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "optim_000001_rank0.pt: refused" in p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert not os.path.exists(marker), "the crafted optim_*.pt ran code"


def test_nanochat_tokenizer_pickle_still_loads_as_data(tmp_path):
    """The golden fixture's tokenizer.pkl (a real nanochat tokenizer) through the data-only reader:
    the same ids as nanochat's; and the tokenizer.json the project writes gives the same again."""
    ref = json.load(open(os.path.join(FIXTURE_D2, "reference_tokenizer.json")))
    tok = Tokenizer.from_directory(os.path.join(FIXTURE_D2, "tokenizer"))
    tok.save(str(tmp_path / "tok"), pickles=False)
    assert sorted(os.listdir(tmp_path / "tok")) == ["tokenizer.json"]
    again = Tokenizer.from_directory(str(tmp_path / "tok"))
    for text, ids in ref["encodings"].items():
        assert tok.encode(text) == ids and again.encode(text) == ids, text
    assert again.get_vocab_size() == tok.get_vocab_size() == ref["vocab_size"] + 1


def test_an_export_is_data_only(tmp_path):
    ckpt = make_checkpoint(tmp_path)
    model, tok, meta = load_model(ckpt)
    out = tmp_path / "exp"
    save_export(str(out), model, tok, meta)
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == ["config.json", "model.safetensors", os.path.join("tokenizer", "tokenizer.json")]
    m2, t2, _ = load_model(str(out))
    assert t2.encode("hello world") == tok.encode("hello world")


def test_a_reexport_that_stops_midway_is_no_export_until_redone(tmp_path, monkeypatch, capsys):
    """Re-exporting un-commits the old export (config.json) before replacing its weights: a re-export
    that dies in between leaves a directory no loader takes for a model (never new weights under an
    old config), and exporting again finishes it."""
    from nanoocr import checkpoint_manager
    from scripts import export as export_script
    ckpt = make_checkpoint(tmp_path)
    out = str(tmp_path / "exp")
    assert export_script.main([ckpt, out]) == 0

    def dies(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint_manager, "save_safetensors", dies)
    with pytest.raises(OSError, match="disk full"):
        export_script.main([ckpt, out, "--dtype", "bfloat16"])
    assert not os.path.exists(os.path.join(out, "config.json"))
    with pytest.raises(CheckpointError):
        load_model(out)
    monkeypatch.undo()
    assert export_script.main([ckpt, out]) == 0  # an interrupted export may be replaced
    assert load_model(out)[2]["step"] == 3


def test_prepare_data_keeps_a_decompression_bomb_limit(tmp_path, monkeypatch):
    """prepare_data decodes the images it converts: it does so under a pixel limit, and with the
    limit off (max_pixels=None) Pillow's own bomb check still holds."""
    import PIL.Image

    from nanoocr.image_process import ImageError, load_image
    from scripts.prepare_data import save_image
    buf = io.BytesIO()
    PIL.Image.new("RGB", (200, 100), "white").save(buf, format="BMP")  # BMP: converted, so decoded
    with pytest.raises(ImageError, match="exceeds the limit of 10,000"):
        save_image(buf.getvalue(), str(tmp_path / "x"), max_pixels=10_000)
    assert not os.path.exists(tmp_path / "x.png")
    assert save_image(buf.getvalue(), str(tmp_path / "y")).endswith("y.png")  # the default limit: 64 M pixels
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 5_000)  # > 2x this is what Pillow calls a bomb
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(buf.getvalue(), max_pixels=None)
