"""
Shared by the `nanoocr serve` tests: a small random model saved as a real checkpoint, the server
started as its own process (the way users run it, and so its memory can be measured alone), plain
http.client helpers with timeouts, and what `nanoocr read` prints for an image.
"""

import contextlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

import torch
from PIL import Image, ImageDraw, ImageFont

from nanoocr.checkpoint_manager import save_checkpoint, save_tokenizer_once
from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
from nanoocr.gpt import GPTConfig
from nanoocr.model import build_vlm
from nanoocr.tokenizer import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODE = [32, 128]  # the checkpoint's training mode: the server's default, as it is `read`'s
WORDS = ["hello world", "total cash", "the lazy dog", "OCR this"]


def make_checkpoint(root):
    """A trained-looking checkpoint with random weights (as tests/test_read_eval.py builds one)."""
    tok = Tokenizer.train_from_iterator(iter([" ".join(WORDS) + " Free OCR. receipts 0123456789"] * 50), 300)
    torch.manual_seed(0)
    enc = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    gpt = GPTConfig(sequence_len=96, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=4, n_kv_head=4,
                    n_embd=enc.out_dim)
    model = build_vlm(enc, gpt, tok.image_id, proj_std=0.05)
    torch.nn.init.normal_(model.gpt.lm_head.weight, std=0.5)  # decisive greedy choices (see test_engine)
    ckpt = os.path.join(str(root), "vis_tok_checkpoints", "t")
    meta = {"model_config": model.config, "user_config": {"mode": MODE, "data": "synth", "seed": 0}, "step": 3}
    save_checkpoint(ckpt, 3, model.state_dict(), None, meta)
    save_tokenizer_once(ckpt, tok)
    return ckpt


def text_image(text, size=(256, 48)):
    im = Image.new("RGB", size, "white")
    ImageDraw.Draw(im).text((8, 8), text, fill="black", font=ImageFont.load_default(size=26))
    return im


def png_bytes(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# -----------------------------------------------------------------------------
# The server as a process

@contextlib.contextmanager
def server_process(ckpt, log_path, *flags, timeout=90):
    """`python -m scripts.serve --model CKPT --port 0 FLAGS` -> (Popen, base url) once /health answers;
    killed afterwards. One torch thread: the tests share two cores with everything else."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.serve", "--model", ckpt, "--port", "0", *flags],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url, t0 = None, time.monotonic()
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{open(log_path).read()}")
            m = re.search(r"listening on (http://\S+)", open(log_path).read())
            if m:
                url = m.group(1)
                try:
                    if request(url, "GET", "/health", timeout=5)[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"server did not come up in {timeout} s:\n{open(log_path).read()}")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown, then the hard way
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def rss_mb(pid, field="VmRSS"):
    """Resident memory of a process from /proc (VmRSS now, VmHWM the peak since the last reset)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


# -----------------------------------------------------------------------------
# HTTP with nothing but the standard library

def request(base, method, path, body=None, headers=None, timeout=60):
    """-> (status, headers dict with lower-case names, body bytes)."""
    u = urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def multipart(fields, files):
    """fields {name: str}, files {name: (filename, bytes, content type)} -> (body, content-type)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, ctype) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f'Content-Type: {ctype}\r\n\r\n'.encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_ocr(base, image_bytes, filename="page.png", ctype="image/png", timeout=60, **fields):
    body, content_type = multipart({k: str(v) for k, v in fields.items()}, {"image": (filename, image_bytes, ctype)})
    return request(base, "POST", "/ocr", body, {"Content-Type": content_type}, timeout=timeout)


def post_json(base, path, payload, timeout=60):
    return request(base, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"},
                   timeout=timeout)


def sse_events(raw):
    """An event-stream body -> [(event name or None, data as parsed JSON or the raw string)]."""
    out = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        data = "\n".join(data)
        out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


# -----------------------------------------------------------------------------
# The reference: what `nanoocr read` prints

def read_output(ckpt, image_path, *flags):
    """`nanoocr read IMAGE --model CKPT FLAGS`, run in this process: its stdout without the final newline."""
    from scripts import read as read_script
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = read_script.main([str(image_path), "--model", ckpt, *flags])
    assert code == 0, f"nanoocr read failed with {code}"
    out = buf.getvalue()
    assert out.endswith("\n")
    return out[:-1]


def read_records(ckpt, path, *flags):
    """`nanoocr read --format jsonl` on one file: its records."""
    from scripts import read as read_script
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert read_script.main([str(path), "--model", ckpt, "--format", "jsonl", *flags]) == 0
    return [json.loads(line) for line in buf.getvalue().splitlines()]
