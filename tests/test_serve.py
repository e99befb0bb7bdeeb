"""
`nanoocr serve` against a small random model saved by a fixture: the JSON API and the OpenAI-style
endpoint give `nanoocr read`'s text, streams add up to it, every limit answers with its status, and
a loopback-only load test (50 concurrent requests: each 200 or 503, memory bounded, bad inputs still
told apart, /health answering throughout). The queue, timeout and disconnect tests run the app
in-process with generation slowed down, so they depend on no machine's speed.
"""

import base64
import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import re
import socket
import threading
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import uvicorn
from PIL import Image, ImageDraw, ImageFont
from serve_fixtures import (
    WORDS,
    make_checkpoint,
    multipart,
    png_bytes,
    post_json,
    post_ocr,
    read_output,
    read_records,
    request,
    rss_mb,
    server_process,
    sse_events,
    text_image,
)

from nanoocr import reader
from nanoocr.checkpoint_manager import load_model
from nanoocr.image_process import sniff_image_type
from scripts import cli, serve, serve_queue

CAP = 24  # the server's --max_tokens_cap, also its default max_tokens (the model's sequence_len is 96)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" * 20
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    ckpt = make_checkpoint(d)
    text_image(WORDS[0]).save(d / "a.png")
    text_image(WORDS[1], size=(300, 60)).save(d / "b.jpg", quality=90)
    return d, ckpt


@pytest.fixture(scope="module")
def server(files):
    d, ckpt = files
    with server_process(ckpt, d / "server.log", "--concurrency", "1", "--queue", "16", "--max_upload_mb", "1",
                        "--max_pixels", "200000", "--timeout", "60", "--max_tokens_cap", str(CAP)) as (proc, url):
        yield proc, url


def ok_json(response):
    status, headers, body = response
    assert status == 200, body
    return json.loads(body)


def wait_for(condition, seconds, what):
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < seconds, f"gave up waiting for {what}"
        time.sleep(0.05)


def data_uri(data, kind="png"):
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def chat(image_bytes=None, text=None, url=None, **extra):
    content = [{"type": "image_url", "image_url": {"url": url or data_uri(image_bytes)}}]
    if text is not None:
        content.insert(0, {"type": "text", "text": text})
    return dict({"model": "t", "messages": [{"role": "system", "content": "You are an OCR model."},
                                            {"role": "user", "content": content}]}, **extra)


# -----------------------------------------------------------------------------
# Pieces

def test_deltas_hold_back_a_split_character():
    d = serve_queue.Deltas()
    # "é" is two UTF-8 bytes; a token boundary between them shows as U+FFFD until the next token
    assert [d.update(t) for t in ["a", "a\ufffd", "aé", "aé\ufffdb", "aé\ufffdb\ufffd"]] == ["a", "", "é", "\ufffdb", ""]
    assert d.update("aé\ufffdb\ufffd", final=True) == "\ufffd"  # a real one at the end is kept
    assert d.sent == "aé\ufffdb\ufffd"


def test_every_accepted_format_is_sniffed_and_decoded():
    from PIL import features
    im = text_image("hi", size=(40, 20))
    formats = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "PPM"] + (["WEBP"] if features.check("webp") else [])
    for fmt in formats:
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        assert sniff_image_type(buf.getvalue()) is not None, fmt
    for impostor in (PDF, b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"", b"GIF8", b"\x00" * 64):
        assert sniff_image_type(impostor) is None


# -----------------------------------------------------------------------------
# The API gives what `nanoocr read` gives

def test_health_page_and_models(server):
    _, url = server
    h = ok_json(request(url, "GET", "/health"))
    assert h["status"] == "ok" and h["model"] == "t" and h["device"] == "cpu"
    assert h["mode"] == "32x128"  # the checkpoint's training mode, as `nanoocr read` defaults to
    assert h["max_tokens"] == h["max_tokens_cap"] == CAP and h["max_upload_mb"] == 1
    assert h["active"] == 0 and h["capacity"] == 17 and "Free OCR." in h["prompts"]
    status, headers, body = request(url, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for needle in (b'id="file"', b'id="mode"', b'id="prompt"', b'id="output"', b'id="copy"', b'id="download"'):
        assert needle in body
    models = ok_json(request(url, "GET", "/v1/models"))
    assert [m["id"] for m in models["data"]] == ["t"]


def test_ocr_gives_nanoocr_reads_text(server, files):
    _, url = server
    d, ckpt = files
    out = ok_json(post_ocr(url, (d / "a.png").read_bytes()))
    assert set(out) <= {"text", "tokens", "seconds", "truncated", "lines"} and out["seconds"] > 0
    assert out["text"] == read_output(ckpt, d / "a.png", "--max_tokens", str(CAP))
    # truncated when the token cap cut it, or when a strip's answer reached what its ink can hold
    # (strips.text_strips' max_chars: an untrained model rambles, and the reader stops it there)
    assert 0 < out["tokens"] <= CAP and (out["tokens"] < CAP or out.get("truncated", False))
    # another mode, prompt and max_tokens, a JPEG sent under a PDF's name and type: the bytes decide
    out = ok_json(post_ocr(url, (d / "b.jpg").read_bytes(), filename="scan.pdf", ctype="application/pdf",
                           mode="tiny", prompt="OCR this image.", max_tokens=7))
    assert out["text"] == read_output(ckpt, d / "b.jpg", "--mode", "tiny", "--prompt", "OCR this image.",
                                      "--max_tokens", "7")
    assert out["tokens"] <= 7
    # gundam: a global view plus tiles, the mode with the most bookkeeping
    out = ok_json(post_ocr(url, (d / "b.jpg").read_bytes(), mode="gundam", max_tokens=5))
    assert out["text"] == read_output(ckpt, d / "b.jpg", "--mode", "gundam", "--max_tokens", "5")


def test_ocr_stream_adds_up_to_the_same_text(server, files):
    _, url = server
    d, _ = files
    image = (d / "a.png").read_bytes()
    whole = ok_json(post_ocr(url, image, max_tokens=12))
    status, headers, body = post_ocr(url, image, max_tokens=12, stream="true")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert events[0][0] == "queued" and events[-1][0] == "done"
    counted = [e[1]["tokens"] for e in events if e[0] == "token" and "tokens" in e[1]]
    assert counted == list(range(1, whole["tokens"] + 1))  # one event per token, as it is generated
    streamed = "".join(e[1]["delta"] for e in events if e[0] == "token")
    assert streamed == events[-1][1]["text"] == whole["text"]
    assert events[-1][1]["tokens"] == whole["tokens"]


def test_a_paragraph_is_cut_into_strips_as_read_cuts_it(server, files, tmp_path):
    # the model reads 32x128 strips: a three-line image is read piece by piece, joined by line
    _, url = server
    _, ckpt = files
    im = Image.new("RGB", (300, 130), "white")
    for i, line in enumerate(["hello world", "total cash", "lazy dog"]):
        ImageDraw.Draw(im).text((10, 10 + 40 * i), line, fill="black", font=ImageFont.load_default(size=22))
    im.save(tmp_path / "para.png")
    whole = ok_json(post_ocr(url, png_bytes(im), max_tokens=4))
    assert whole["text"] == read_output(ckpt, tmp_path / "para.png", "--max_tokens", "4")
    assert whole["text"].count("\n") == 2
    events = sse_events(post_ocr(url, png_bytes(im), max_tokens=4, stream="true")[2])
    streamed = "".join(e[1]["delta"] for e in events if e[0] == "token")
    assert streamed == events[-1][1]["text"] == whole["text"] and events[-1][1]["tokens"] == whole["tokens"]


def test_chat_completions_plain_and_streamed(server, files):
    _, url = server
    d, _ = files
    image = (d / "b.jpg").read_bytes()
    ref = ok_json(post_ocr(url, image, prompt="OCR this image.", max_tokens=10))
    out = ok_json(post_json(url, "/v1/chat/completions", chat(image, "OCR this image.", max_tokens=10, temperature=0)))
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-") and out["model"] == "t"
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": ref["text"]}
    assert choice["finish_reason"] == ("length" if ref.get("truncated") else "stop")
    assert out["usage"]["completion_tokens"] == ref["tokens"]
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + ref["tokens"]
    # no text part: the default prompt, as /ocr
    plain = ok_json(post_json(url, "/v1/chat/completions", chat(image, max_completion_tokens=10)))
    assert plain["choices"][0]["message"]["content"] == ok_json(post_ocr(url, image, max_tokens=10))["text"]

    status, headers, body = post_json(url, "/v1/chat/completions",
                                      chat(image, "OCR this image.", max_tokens=10, stream=True,
                                           stream_options={"include_usage": True}))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert all(name is None for name, _ in events) and events[-1][1] == "[DONE]"
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == out["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:-2]]
    assert "".join(pieces) == ref["text"] and len(pieces) > 1


# -----------------------------------------------------------------------------
# Limits and bad inputs

def chunked_post(url, path, body, content_type, timeout=30):
    """POST with Transfer-Encoding: chunked (no Content-Length): the server must count as it reads."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
        try:
            conn.request("POST", path, body=pieces, headers={"Content-Type": content_type}, encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has seen enough; its answer is still there
        r = conn.getresponse()
        return r.status, {}, r.read()
    finally:
        conn.close()


def test_ocr_returns_boxes_and_confidences_and_reads_pdf_pages(server, files, tmp_path):
    """/ocr gives `nanoocr read --format jsonl`'s lines (boxes in the upload's pixels, confidences);
    a PDF comes back page by page, each page as `read` reads it; a PDF over --max_pages is a 413
    before anything is rendered; the OpenAI endpoint still takes images only."""
    from fpdf import FPDF
    _, url = server
    d, ckpt = files
    para = Image.new("RGB", (300, 110), "white")
    for i, line in enumerate(["hello world", "total cash"]):
        ImageDraw.Draw(para).text((10, 10 + 45 * i), line, fill="black", font=ImageFont.load_default(size=24))
    para.save(tmp_path / "para.png")
    out = ok_json(post_ocr(url, (tmp_path / "para.png").read_bytes()))
    rec, = read_records(ckpt, tmp_path / "para.png", "--max_tokens", str(CAP))
    assert out["text"] == rec["text"] and out["lines"] == rec["lines"] and len(out["lines"]) == 2
    for line in out["lines"]:
        l, t, r, b = line["box"]
        assert 0 <= l < r <= 300 and 0 <= t < b <= 110 and 0 <= line["confidence"] <= 1
    pdf = FPDF(unit="pt")
    for name in ("a.png", "para.png"):
        im = Image.open(d / name if name == "a.png" else tmp_path / name)
        pdf.add_page(format=im.size)
        pdf.image(im, x=0, y=0, w=im.size[0], h=im.size[1])
    (tmp_path / "two.pdf").write_bytes(bytes(pdf.output()))
    out = ok_json(post_ocr(url, (tmp_path / "two.pdf").read_bytes(), filename="two.pdf", ctype="application/pdf",
                           max_tokens=CAP))
    recs = read_records(ckpt, tmp_path / "two.pdf", "--max_tokens", str(CAP), "--dpi", "144")
    assert [p["page"] for p in out["pages"]] == [1, 2] == [r["page"] for r in recs]
    assert [p["text"] for p in out["pages"]] == [r["text"] for r in recs]
    assert [p["lines"] for p in out["pages"]] == [r["lines"] for r in recs]
    # a damaged page: its own error entry, the other page read
    data = (tmp_path / "two.pdf").read_bytes()
    at = [m.start() for m in re.finditer(rb"/Type /Page\b", data)][1]
    broken = data[:at] + b"/Type /Xage" + data[at + len(b"/Type /Page"):]
    out = ok_json(post_ocr(url, broken, filename="two.pdf", max_tokens=CAP))
    assert out["pages"][0]["text"] == recs[0]["text"] and "page 2" in out["pages"][1]["error"]
    many = FPDF(unit="pt")
    for _ in range(21):
        many.add_page(format=(50, 50))
    status, _, body = post_ocr(url, bytes(many.output()), filename="many.pdf")
    assert status == 413 and "21 pages" in json.loads(body)["error"]
    status, _, body = post_json(url, "/v1/chat/completions", chat((tmp_path / "two.pdf").read_bytes()))
    assert status == 415 and "PDF" in json.loads(body)["error"]["message"]


def test_limits_and_bad_inputs_get_their_status(server, files):
    _, url = server
    d, _ = files
    good = (d / "a.png").read_bytes()
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(1536 * 1024)  # over the 1 MB limit
    white = png_bytes(Image.new("RGB", (500, 500), "white"))  # 250,000 pixels > --max_pixels 200,000
    field_only = multipart({"image": "abc"}, {})  # the image sent as a text field, not a file
    expect = [
        (post_ocr(url, big), 413, "limit"),
        (chunked_post(url, "/ocr", *multipart({}, {"image": ("x.png", big, "image/png")})), 413, "limit"),
        (post_ocr(url, PDF, filename="page.png"), 400, "not a readable PDF"),  # /ocr reads PDFs: a broken one is a 400
        (post_ocr(url, b"<!doctype html><html>404</html>", filename="page.jpg", ctype="image/jpeg"), 415, "HTML"),
        (post_ocr(url, b""), 415, "empty"),
        (post_ocr(url, CORRUPT_PNG), 400, "not a readable image"),
        (post_ocr(url, good[:len(good) // 2]), 400, "truncated"),
        (post_ocr(url, white), 400, "exceeds the limit"),
        (post_ocr(url, good, mode="30x100"), 400, "stride"),
        (post_ocr(url, good, mode="huge"), 400, "unknown mode"),
        # a client-chosen size would cut the page into strips of any size: only the named modes and
        # the model's own trained size (32x128) are accepted
        (post_ocr(url, good, mode="16384x16384"), 400,
         "mode 16384x16384 is not allowed: use one of tiny, small, base, large, gundam, 32x128"),
        (post_ocr(url, good, mode="64x256"), 400, "not allowed"),
        (post_ocr(url, good, max_tokens=CAP + 1), 400, f"between 1 and {CAP}"),
        (post_ocr(url, good, max_tokens="many"), 400, "integer"),
        (post_ocr(url, good, prompt="x" * 5000), 400, "prompt"),
        (post_ocr(url, good, prompt="Q" * 3000), 400, "positions"),  # 3000 tokens: past the rotary table
        (request(url, "POST", "/ocr", field_only[0], {"Content-Type": field_only[1]}), 400, "file field"),
        (request(url, "POST", "/ocr", b"{}", {"Content-Type": "application/json"}), 400, "multipart"),
    ]
    for (status, *_, body), want, needle in expect:
        assert status == want, (want, needle, body[:300])
        assert needle in json.loads(body)["error"], (needle, body[:300])

    v1 = "/v1/chat/completions"
    expect = [
        (request(url, "POST", v1, b"{not json", {"Content-Type": "application/json"}), 400, "JSON"),
        (post_json(url, v1, {"messages": []}), 400, "messages"),
        (post_json(url, v1, {"messages": [{"role": "user", "content": "hi"}]}), 400, "exactly one image_url"),
        (post_json(url, v1, chat(url="https://example.com/a.png")), 400, "data: URI"),
        (post_json(url, v1, chat(url="data:image/png;base64,@@@")), 400, "base64"),
        (post_json(url, v1, chat(good, max_tokens=CAP + 1)), 400, f"between 1 and {CAP}"),
        (post_json(url, v1, chat(good, temperature=5)), 400, "temperature"),
        (post_json(url, v1, chat(big)), 413, "limit"),
        (post_json(url, v1, chat(PDF)), 415, "PDF"),
        (post_json(url, v1, chat(CORRUPT_PNG)), 400, "not a readable image"),
        (post_json(url, v1, chat(good, mode="16384x16384")), 400, "not allowed: use one of tiny"),
        (post_json(url, v1, chat(good, mode=[32, 128])), 400, "mode must be a string"),
        (post_json(url, v1, chat(good, stream_options="yes")), 400, "stream_options must be an object"),
        (post_json(url, v1, chat(good, stream_options={"include_usage": "no"})), 400, "include_usage must be"),
        (post_json(url, v1, chat(good, stream="false")), 400, "stream must be true or false"),
        (post_json(url, v1, chat(good, max_tokens=2.5)), 400, "integer"),
        # a cross-origin page can post text/plain without the browser asking first; JSON it cannot
        (request(url, "POST", v1, json.dumps(chat(good)).encode(), {"Content-Type": "text/plain"}), 415,
         "application/json"),
        (request(url, "POST", v1, json.dumps(chat(good)).encode()), 415, "application/json"),
    ]
    for (status, _, body), want, needle in expect:
        err = json.loads(body)["error"]  # OpenAI's error shape
        assert status == want and err["code"] == want and needle in err["message"], (want, needle, body[:300])
    # nothing left holding a place (a job's place is given back just after its answer is sent)
    wait_for(lambda: ok_json(request(url, "GET", "/health"))["active"] == 0, 5, "an empty queue")


# -----------------------------------------------------------------------------
# Load: 100 concurrent requests on loopback

def test_load_100_concurrent_requests(server, files):
    proc, url = server
    # noise barely compresses: ~570 KB per upload, just under the 1 MB limit and the pixel limit, so
    # buffering, spooling and decoding all carry real weight (50 requests = 28 MB of uploads)
    rng = np.random.default_rng(0)
    image = png_bytes(Image.fromarray(rng.integers(0, 256, (400, 480, 3), dtype=np.uint8)))
    assert 500_000 < len(image) < 1024 * 1024
    ok_json(post_ocr(url, image, max_tokens=4))  # warm: the first request's allocations are part of idle
    idle = rss_mb(proc.pid)
    try:  # reset the kernel's peak-RSS mark so VmHWM is the peak of this test alone
        with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
            f.write("5")
        hwm = True
    except OSError:
        hwm = False
    stop, peak, health = threading.Event(), [idle], []

    def watch():  # /health and the server's memory, every 50 ms while the load runs
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(proc.pid))
            try:
                health.append(request(url, "GET", "/health", timeout=10)[0])
            except OSError as e:
                health.append(repr(e))
            stop.wait(0.05)

    n = 100
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(30)
        return post_ocr(url, image, max_tokens=8, timeout=120)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(one, range(n)))
    finally:
        stop.set()
        watcher.join(15)
    wall = time.monotonic() - t0
    if hwm:
        peak[0] = max(peak[0], rss_mb(proc.pid, "VmHWM"))
    statuses = [r[0] for r in results[:n]]
    texts = {json.loads(r[2])["text"] for r in results[:n] if r[0] == 200}
    n200, n503 = statuses.count(200), statuses.count(503)
    print(f"\nload: {n} concurrent -> {n200} x 200, {n503} x 503 in {wall:.1f} s; server RSS idle {idle:.0f} MB, "
          f"peak {peak[0]:.0f} MB (+{peak[0] - idle:.0f}); /health {health.count(200)}/{len(health)} ok")
    assert n200 + n503 == n, statuses
    assert n200 >= 1 and len(texts) == 1  # everyone admitted read the same image the same way
    for status, headers, body in results[:n]:
        if status == 503:
            assert int(headers["retry-after"]) >= 1 and "busy" in json.loads(body)["error"]
    assert health and all(s == 200 for s in health), health
    # a place in the queue is taken before a body is read: at most capacity (--concurrency 1 + --queue 16)
    # uploads and decoded images are held at once, whatever the number of clients
    bound = 200
    after = rss_mb(proc.pid)
    print(f"load: server RSS growth at the peak {peak[0] - idle:.0f} MB, after the burst {after - idle:.0f} MB; "
          f"bound {bound} MB")
    assert peak[0] - idle < bound, f"server RSS grew {peak[0] - idle:.0f} MB under load (idle {idle:.0f} MB)"
    assert after - idle < bound, f"server RSS {after - idle:.0f} MB above idle after the burst"
    # bad uploads, once there is room, hear what is wrong with them
    wait_for(lambda: ok_json(request(url, "GET", "/health"))["active"] == 0, 10, "an empty queue")
    assert post_ocr(url, b"\x89PNG\r\n\x1a\n" + bytes(1536 * 1024))[0] == 413
    assert post_ocr(url, b"<!doctype html><html>404</html>", filename="scan.png")[0] == 415
    assert post_ocr(url, CORRUPT_PNG)[0] == 400
    # afterwards: nothing queued, and still serving
    wait_for(lambda: ok_json(request(url, "GET", "/health"))["active"] == 0, 5, "an empty queue")
    assert ok_json(post_ocr(url, image, max_tokens=4))["tokens"] > 0


# -----------------------------------------------------------------------------
# Queue full, client gone, timeout: in-process, generation slowed to 0.2 s per token

@contextlib.contextmanager
def inprocess_server(ckpt, **limits):
    model, tok, meta = load_model(ckpt)
    state = serve_queue.OcrServer(model, tok, meta, "t", **limits)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(serve.create_app(state), log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not uv.started:
        assert time.monotonic() - t0 < 30 and thread.is_alive(), "in-process server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", state
    finally:
        uv.should_exit = True
        thread.join(15)


@pytest.fixture
def slow_generation(monkeypatch):
    real = reader.read_strips  # the name the server's reading path (reader.generate_views) calls

    def slow(*args, callback=None, **kwargs):
        def cb(*a):
            time.sleep(0.2)
            callback(*a)
        return real(*args, callback=cb, **kwargs)
    monkeypatch.setattr(reader, "read_strips", slow)


def test_queue_full_client_gone_and_timeout(files, slow_generation):
    d, ckpt = files
    image = (d / "a.png").read_bytes()
    with inprocess_server(ckpt, concurrency=1, queue=1, timeout=3.0, max_tokens_cap=CAP) as (url, state):
        health = lambda: ok_json(request(url, "GET", "/health", timeout=5))
        # A streams and is generating; B waits in the queue; C finds it full
        u = urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        body, ctype = multipart({"stream": "true", "max_tokens": str(CAP)}, {"image": ("a.png", image, "image/png")})
        conn.request("POST", "/ocr", body=body, headers={"Content-Type": ctype})
        stream = conn.getresponse()
        assert stream.status == 200
        while b"event: token" not in stream.readline():
            pass
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            b = pool.submit(post_ocr, url, image, max_tokens=3, timeout=30)
            wait_for(lambda: health()["active"] == 2, 10, "B to be queued")  # /health answers meanwhile
            status, headers, c = post_ocr(url, image, max_tokens=3)
            assert status == 503 and int(headers["retry-after"]) >= 1 and "busy" in json.loads(c)["error"]
            # A's client leaves: its generation stops at the next token and B gets the model
            conn.close()
            status, _, out = b.result(timeout=30)
            assert status == 200 and json.loads(out)["tokens"] == 3
        wait_for(lambda: health()["active"] == 0, 5, "A's cancelled job to end")
        # over the 3 s timeout (24 tokens x 0.2 s): 504, and a stream gets an error event
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            plain = pool.submit(post_ocr, url, image, timeout=30)
            status, _, streamed = post_ocr(url, image, stream="true", timeout=30)
            assert status == 200
            last = sse_events(streamed)[-1]
            assert last[0] == "error" and last[1]["status"] == 504 and "timeout" in last[1]["error"]
            status, _, body = plain.result(timeout=30)
            assert status == 504 and "--timeout" in json.loads(body)["error"]
        wait_for(lambda: health()["active"] == 0, 5, "timed-out jobs to stop")


def test_api_key_and_a_non_streaming_client_that_leaves(files, slow_generation):
    d, ckpt = files
    image = (d / "a.png").read_bytes()
    with inprocess_server(ckpt, timeout=60.0, max_tokens_cap=CAP, api_key="s3cret") as (url, state):
        key = {"Authorization": "Bearer s3cret"}
        body, ctype = multipart({"max_tokens": "2"}, {"image": ("a.png", image, "image/png")})
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, h, out = request(url, "POST", "/ocr", body, dict(headers, **{"Content-Type": ctype}))
            assert status == 401 and h["www-authenticate"] == "Bearer" and "API key" in json.loads(out)["error"]
        status, _, out = request(url, "POST", "/v1/chat/completions", json.dumps(chat(image)).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 401 and json.loads(out)["error"]["code"] == 401
        assert request(url, "GET", "/v1/models")[0] == 401
        health = ok_json(request(url, "GET", "/health"))  # open: for load balancers and the page
        assert health["api_key_required"] is True and health["active"] == 0
        assert request(url, "GET", "/")[0] == 200
        assert ok_json(request(url, "POST", "/ocr", body, dict(key, **{"Content-Type": ctype})))["tokens"] == 2
        assert ok_json(request(url, "GET", "/v1/models", headers=key))["data"][0]["id"] == "t"

        # a non-streaming request (24 tokens x 0.2 s = 4.8 s) whose client leaves stops within about a second
        u = urlparse(url)
        body, ctype = multipart({"max_tokens": str(CAP)}, {"image": ("a.png", image, "image/png")})
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request("POST", "/ocr", body=body, headers=dict(key, **{"Content-Type": ctype}))
        wait_for(lambda: state.jobs and next(iter(state.jobs)).n_tokens >= 2, 10, "generation to start")
        conn.close()
        t0 = time.monotonic()
        wait_for(lambda: ok_json(request(url, "GET", "/health"))["active"] == 0, 3.5, "the left job to stop")
        print(f"\nclient gone -> job stopped in {time.monotonic() - t0:.2f} s")
        assert time.monotonic() - t0 < 2.5


def test_slow_body_gets_408(files):
    d, ckpt = files
    with inprocess_server(ckpt, timeout=1.0) as (url, _):
        u = urlparse(url)
        sock = socket.create_connection((u.hostname, u.port), timeout=10)
        try:  # announce 1000 bytes, send 10, then nothing
            sock.sendall(b"POST /ocr HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 1000\r\n\r\n--b\r\nabcd")
            reply = b""
            while chunk := sock.recv(65536):  # the server closes the connection after its answer
                reply += chunk
        finally:
            sock.close()
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive" in reply


# -----------------------------------------------------------------------------
# Command line

@pytest.mark.filterwarnings("ignore:'scripts.serve' found in sys.modules")  # runpy, as `nanoocr serve` runs it
def test_command_line_errors(files, capsys):
    d, ckpt = files
    with pytest.raises(SystemExit) as e:
        serve.parse_args(["--bogus"])
    assert e.value.code == 2 and "--bogus" in capsys.readouterr().err
    # --key_name as the configurator spells it; the old --key-name still works for one release
    old = serve.parse_args(["--max-upload-mb", "2", "--max-pixels", "9", "--max-tokens-cap", "5"])
    assert vars(old) == vars(serve.parse_args(["--max_upload_mb", "2", "--max_pixels", "9", "--max_tokens_cap", "5"]))
    assert (old.max_upload_mb, old.max_pixels, old.max_tokens_cap) == (2.0, 9, 5)
    assert cli.main(["serve", "--concurrency", "0"]) == 2
    assert "--concurrency" in capsys.readouterr().err
    assert serve.main(["--model", str(d / "missing")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert serve.main([]) == 2  # the test's base dir holds no model
    assert "nanoocr train" in capsys.readouterr().err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        assert serve.main(["--model", ckpt, "--port", str(taken.getsockname()[1])]) == 2
        assert "cannot listen" in capsys.readouterr().err
    finally:
        taken.close()
