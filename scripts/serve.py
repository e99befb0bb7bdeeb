"""
Serve a trained model over HTTP: a web page, a JSON API and an OpenAI-style endpoint.

    nanoocr serve                                  # newest trained model, http://127.0.0.1:8000
    nanoocr serve --model exported/cpu --port 8080 --concurrency 2 --queue 32

    GET  /                      the page: drop, paste or pick an image, watch the text stream in
    POST /ocr                   multipart: image (file), optional mode, prompt, max_tokens, stream
                                -> {"text", "tokens", "seconds"} (+ "truncated": true when max_tokens cut it;
                                seconds = decoding + generation, not time spent queued),
                                or with stream=true an event stream (queued / token / done / error)
    POST /v1/chat/completions   OpenAI-style: one user message whose content holds an image_url part
                                with a data: URI (+ text parts = the prompt); "stream": true -> SSE
                                chat.completion.chunk events ending with `data: [DONE]`
    GET  /v1/models             the one model, for clients that list models first
    GET  /health                status, defaults (mode, prompt, max tokens) and queue occupancy

    curl -F image=@page.png -F mode=base http://127.0.0.1:8000/ocr

One model instance serves everything. Limits, each with its own status: 413 body/upload over
--max_upload_mb (counted while reading, never buffered past the limit), 415 bytes that are not an
image whatever the name or declared type says, 400 corrupt image / too many pixels / bad parameter,
408 a body that takes longer than --timeout to arrive. A request that passes all of them joins the
queue: at most --concurrency + --queue jobs at a time (503 with Retry-After beyond); --concurrency
worker threads generate, so the event loop keeps answering /health and streaming tokens while the
model runs. 504: not done within --timeout of arrival (a stream gets an error event instead, its
200 having been sent already).

Generation is exactly `nanoocr read`'s: same defaults (training mode, "Free OCR.", the model's
sequence length as max tokens, the no-repeat rule), greedy, so the page, the API and `read` agree
on every image. The server binds 127.0.0.1 unless told otherwise: it has no authentication.
"""

import os
import sys
import json
import time
import uuid
import base64
import socket
import asyncio
import argparse
import binascii
import threading
import traceback
import contextlib
import concurrent.futures

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse, HTMLResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from nanoocr import reader
from nanoocr.modes import MODES, DEFAULT_PROMPT, default_mode, resolve_mode
from nanoocr.engine import prompt_ids
from nanoocr.image_process import DEFAULT_MAX_PIXELS, ImageError, sniff_image_type, describe_non_image
from nanoocr.deepencoder import num_image_tokens

PAGE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_page.html")
PROMPTS = [DEFAULT_PROMPT, "<|grounding|>Convert the document to markdown.", "<|grounding|>OCR this image.",
           "Parse the figure.", "Describe this image in detail."]  # DeepSeek-OCR's (dev/design.md §3)
MAX_PROMPT_CHARS = 4000
MB = 1024 * 1024
FORM_SLACK = 64 * 1024  # multipart boundaries, part headers and the small fields around the image

# -----------------------------------------------------------------------------
# Errors and request bodies

class ApiError(Exception):
    """A request we answer with `status` and a message meant for the person who sent it."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class BodyTooLarge(Exception):
    pass


class LimitedBody:
    """The request's receive(), counting body bytes and failing as soon as they pass the limit, so an
    oversized upload is refused after reading at most `limit` bytes of it instead of after buffering
    (or spooling to disk) all of it."""

    def __init__(self, request, limit):
        self.request, self.limit = request, limit
        self.seen, self.done = 0, False
        length = request.headers.get("content-length")
        self.declared = int(length) if length and length.isdigit() else None

    async def receive(self):
        message = await self.request.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.seen > self.limit:
                raise BodyTooLarge()
        elif message["type"] == "http.disconnect":
            self.done = True
        return message

    def limited_request(self):
        if self.declared is not None and self.declared > self.limit:
            raise BodyTooLarge()  # no need to read a byte
        return Request(self.request.scope, self.receive)

    async def drain(self, seconds):
        """Read and drop what the client is still sending before we answer early (a 413, or any error
        found before the body was read): a server that closes a socket with unread data makes the
        kernel reset the connection, and many clients then report "connection reset" instead of our
        status. Bounded in bytes and time; a
        client that announced `Expect: 100-continue` has sent nothing yet and is not asked to."""
        if self.done or "100-continue" in self.request.headers.get("expect", "").lower():
            return
        if self.declared is not None and self.declared > 4 * self.limit + MB:
            return  # not worth reading; that client gets the reset
        cap, deadline = 4 * self.limit + MB, time.monotonic() + seconds
        try:
            while not self.done and self.seen <= cap:
                message = await asyncio.wait_for(self.request.receive(), max(0.01, deadline - time.monotonic()))
                if message["type"] == "http.request":
                    self.seen += len(message.get("body", b""))
                    self.done = not message.get("more_body", False)
                else:
                    self.done = True
        except (asyncio.TimeoutError, OSError):
            pass


def error_body(message, status, openai):
    if openai:  # the shape OpenAI's clients know how to show
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"error": message}


def sse(data, event=None):
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Deltas:
    """Text-so-far snapshots -> the newly added piece. A token can end inside a multi-byte UTF-8
    character, which decodes as U+FFFD until a later token completes it, so a trailing U+FFFD is held
    back: what has been sent is then always a prefix of the final text."""

    def __init__(self):
        self.sent = ""

    def update(self, text, final=False):
        stable = text if final else text.rstrip("\ufffd")
        if len(stable) <= len(self.sent) or not stable.startswith(self.sent):
            return ""
        delta, self.sent = stable[len(self.sent):], stable
        return delta


# -----------------------------------------------------------------------------
# The model behind a bounded queue

class Cancelled(Exception):
    """Raised inside the generation callback to stop a job whose client left or whose time ran out."""


class Job:
    """One image's generation. The worker thread reports through `events` (an asyncio queue filled
    via the event loop, the only thread allowed to touch it): ("token", text_so_far, n),
    ("done", result), ("error", ApiError). views: [(line index, processed image)], one entry unless
    a strip model's image was cut into pieces (read one after another, texts joined by line)."""

    def __init__(self, loop, views, prompt, max_tokens, deadline, sampling, prep_seconds):
        self.loop, self.views, self.prompt, self.max_tokens = loop, views, prompt, max_tokens
        self.deadline, self.sampling, self.prep_seconds = deadline, sampling, prep_seconds
        self.events = asyncio.Queue()
        self.cancelled = threading.Event()
        self.n_tokens = 0  # answer tokens so far (written by the worker thread only)
        self.prompt_tokens = 0

    def emit(self, *event):
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # the loop is gone (server shutting down): nobody is listening

    def expired(self):
        return self.cancelled.is_set() or time.monotonic() > self.deadline


class OcrServer:
    """The model, its limits and its queue.

    A request is checked completely before it asks for a place in the queue: size (413), format
    (415), parameters and the decoded image (400). A bad request so always hears what is wrong with
    it, never a 503 that would have it retried forever. Decoding runs on two threads of its own, so
    the images being decoded at once are bounded whatever the number of clients. Then admission: at
    most concurrency + queue jobs exist (a 503 with Retry-After beyond), each holding its decoded
    pixels until its generation thread ends. The count is kept on the event loop thread only, so it
    needs no lock."""

    def __init__(self, model, tokenizer, meta, model_dir="", concurrency=1, queue=16, max_upload_mb=20.0,
                 timeout=120.0, max_tokens_cap=None, max_pixels=DEFAULT_MAX_PIXELS, autocast_dtype=None):
        self.model, self.tokenizer, self.meta = model.eval(), tokenizer, meta
        self.model_name = os.path.basename(os.path.normpath(model_dir)) if model_dir else "nanoocr"
        self.mode = default_mode(meta)
        self.max_words = reader.trained_max_words(meta)  # strip models: words per cut piece, as `nanoocr read`
        self.max_tokens = reader.default_max_tokens(model)  # `nanoocr read`'s default
        self.max_tokens_cap = max_tokens_cap or self.max_tokens
        self.max_tokens = min(self.max_tokens, self.max_tokens_cap)
        self.positions = model.gpt.cos.size(1)  # prompt + answer must fit the rotary table
        self.concurrency, self.capacity = concurrency, concurrency + queue
        self.max_upload = int(max_upload_mb * MB)
        self.timeout, self.max_pixels, self.autocast_dtype = timeout, max_pixels, autocast_dtype
        self.active = 0  # admitted jobs: queued or generating
        self.avg_seconds = 1.0  # running mean of generation time, for Retry-After
        self.jobs = set()
        # generation threads: the executor's own FIFO is the queue; a job that expired while queued is
        # skipped when its turn comes. Decoding gets two threads of its own so a big PNG does not
        # stall the event loop, and waits for nothing but the CPU.
        self.generators = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="nanoocr-gen")
        self.decoders = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="nanoocr-decode")

    def mode_name(self, mode):
        return f"{mode[0]}x{mode[1]}" if isinstance(mode, tuple) else mode

    def info(self):
        return {"status": "ok", "model": self.model_name, "device": str(self.model.get_device()),
                "mode": self.mode_name(self.mode), "modes": list(MODES), "prompt": DEFAULT_PROMPT,
                "prompts": PROMPTS, "max_tokens": self.max_tokens, "max_tokens_cap": self.max_tokens_cap,
                "max_upload_mb": self.max_upload / MB, "active": self.active, "capacity": self.capacity}

    # --- admission -----------------------------------------------------------------------------------

    async def guarded(self, request, body_limit, handler, openai=False):
        """Run handler(body, deadline) and turn its ApiError (and the body limit's) into a status with
        a readable body, in /ocr's shape or OpenAI's."""
        deadline = time.monotonic() + self.timeout
        body = LimitedBody(request, body_limit)
        try:
            return await handler(body, deadline)
        except ClientDisconnect:
            return JSONResponse(error_body("client disconnected", 499, openai), status_code=499)
        except (ApiError, BodyTooLarge, HTTPException) as e:
            if isinstance(e, BodyTooLarge):
                e = ApiError(413, f"request body over the limit of {body_limit / MB:.1f} MB "
                                  f"(the server's --max_upload_mb is {self.max_upload / MB:g})")
            elif isinstance(e, HTTPException):  # Starlette's own 400s (malformed multipart, ...)
                e = ApiError(e.status_code, str(e.detail))
            if e.status != 408:  # a client too slow to send its body will not drain faster
                await body.drain(5.0)
            return self.error_response(e, openai, close=not body.done)

    def error_response(self, e, openai, close=False):
        headers = dict(e.headers, **({"Connection": "close"} if close else {}))
        return JSONResponse(error_body(e.message, e.status, openai), status_code=e.status, headers=headers)

    # --- inputs --------------------------------------------------------------------------------------

    def check_params(self, mode, prompt, max_tokens):
        """Request parameters -> (mode, prompt, max_tokens) or a 400 that says what is allowed."""
        try:
            mode = resolve_mode(self.model.encoder.config, self.meta, mode)
        except (ValueError, AssertionError) as e:
            raise ApiError(400, str(e))
        prompt = DEFAULT_PROMPT if prompt is None or not str(prompt).strip() else str(prompt)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(400, f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if max_tokens is None or max_tokens == "":
            max_tokens = self.max_tokens
        try:
            max_tokens = int(max_tokens)
        except (TypeError, ValueError):
            raise ApiError(400, f"max_tokens must be an integer, got {max_tokens!r}")
        if not 1 <= max_tokens <= self.max_tokens_cap:
            raise ApiError(400, f"max_tokens must be between 1 and {self.max_tokens_cap} (the server's cap), "
                                f"got {max_tokens}")
        return mode, prompt, max_tokens

    def check_bytes(self, data):
        if len(data) > self.max_upload:
            raise ApiError(413, f"image is {len(data) / MB:.1f} MB; the limit is {self.max_upload / MB:g} MB")
        if sniff_image_type(data) is None:
            # image_process's sniffer names the usual impostors (PDF, SVG, an HTML error page)
            raise ApiError(415, f"not an image the server reads: {describe_non_image(data[:1024])} "
                                f"(accepted: PNG, JPEG, GIF, BMP, TIFF, WEBP, PNM)")

    def decode(self, data, name, mode):
        """Bytes -> [(line index, process_image dict)] (in a decoder thread): one view, or for a strip
        model an image of another size cut into lines and word groups as `nanoocr read` cuts it
        (reader.load_views, as `nanoocr read` loads files); a broken or oversized image is a 400."""
        try:
            return reader.load_views(self.model, data, mode, self.max_words, name=name, max_pixels=self.max_pixels)
        except ImageError as e:
            raise ApiError(400, str(e))

    async def prepare(self, data, name, mode, prompt, max_tokens, deadline, sampling=None):
        """Validated bytes + parameters -> a Job ready to submit (every input error raised before a
        stream starts, so each gets its real status)."""
        mode, prompt, max_tokens = self.check_params(mode, prompt, max_tokens)
        self.check_bytes(data)
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        views = await self.until(loop.run_in_executor(self.decoders, self.decode, data, name, mode), deadline)
        w, h = views[0][1]["size"] if views else (mode[1], mode[0])  # only a strip cut can come back empty
        n_image = num_image_tokens(self.model.encoder.config, mode, width=w, height=h)
        try:
            prompt_len = len(prompt_ids(self.tokenizer, prompt, n_image))
        except (ValueError, AssertionError) as e:
            raise ApiError(400, f"cannot use this prompt: {e}")
        if prompt_len + max_tokens > self.positions:
            raise ApiError(400, f"prompt ({prompt_len} tokens, {n_image} of them image) + max_tokens {max_tokens} "
                                f"exceeds the model's {self.positions} positions; lower max_tokens or use a smaller mode")
        job = Job(loop, views, prompt, max_tokens, deadline, sampling or {}, time.monotonic() - t0)
        job.prompt_tokens = prompt_len
        return job

    def timed_out(self, status=504):
        what = "the request body did not arrive" if status == 408 else "request not done"
        return ApiError(status, f"{what} within the server's --timeout of {self.timeout:g} s")

    async def until(self, awaitable, deadline, status=504):
        try:
            return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise self.timed_out(status)

    # --- generation ----------------------------------------------------------------------------------

    def submit(self, job):
        """Admit the job (or answer 503) and hand it to a generation thread; its place in the queue
        is given back when that thread is done with it, whatever happened to the client."""
        if self.active >= self.capacity:
            wait = max(1, min(60, round(self.avg_seconds * self.active / self.concurrency)))
            raise ApiError(503, f"the server is busy ({self.active} requests queued or running, the limit is "
                                f"{self.capacity}); retry in {wait} s", {"Retry-After": str(wait)})
        self.active += 1
        self.jobs.add(job)
        # how many jobs must finish before this one starts (FIFO), sent before any token can be
        job.emit("queued", max(0, self.active - self.concurrency))
        future = asyncio.get_running_loop().run_in_executor(self.generators, self.run_job, job)

        def finished(_):  # runs on the event loop
            self.jobs.discard(job)
            self.active -= 1
        future.add_done_callback(finished)

    def run_job(self, job):
        """The worker thread: generate with a callback that streams tokens out and stops the loop when
        the job has been cancelled or has run out of time."""
        if job.expired():
            job.emit("error", self.timed_out())
            return

        def on_token(_image, token_id, text):  # text: the image's pieces so far, joined by line
            if job.expired():
                raise Cancelled()
            job.n_tokens += 1
            job.emit("token", text, job.n_tokens)

        t0 = time.monotonic()
        try:
            # one piece at a time (batch_size 1), so the streamed text only ever grows
            out = reader.generate_views(self.model, self.tokenizer, [job.views], [job.prompt], batch_size=1,
                                        callback=on_token, max_tokens=job.max_tokens,
                                        no_repeat_ngram_size=reader.NO_REPEAT_NGRAM,
                                        no_repeat_window=reader.NO_REPEAT_WINDOW,
                                        autocast_dtype=self.autocast_dtype, **job.sampling)[0]
        except Cancelled:
            job.emit("error", self.timed_out())
            return
        except Exception as e:  # a bug or an out-of-memory: say so, keep serving
            traceback.print_exc()
            job.emit("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}"))
            return
        finally:
            job.views = None  # the pixels are not needed any more; free them before the client reads
        seconds = time.monotonic() - t0
        self.avg_seconds = 0.8 * self.avg_seconds + 0.2 * seconds
        out["seconds"] = round(job.prep_seconds + seconds, 4)
        job.emit("done", out)

    async def events(self, job, request):
        """The job's events as they come, ending with done or error. Stops the job when the deadline
        passes or the client goes away (checked once a second while nothing else happens)."""
        try:
            while True:
                left = job.deadline - time.monotonic()
                if left <= 0:
                    raise self.timed_out()
                try:
                    event = await asyncio.wait_for(job.events.get(), min(left, 1.0))
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                yield event
                if event[0] in ("done", "error"):
                    return
        finally:
            job.cancelled.set()  # no-op for a finished job; stops one whose listener left

    async def result(self, job, request):
        """Wait for a job without streaming: its generate() result, or its error raised."""
        async with contextlib.aclosing(self.events(job, request)) as events:
            async for event in events:
                if event[0] == "error":
                    raise event[1]
                if event[0] == "done":
                    return event[1]
        raise ApiError(499, "client disconnected")

    def shutdown(self):
        for job in list(self.jobs):
            job.cancelled.set()
        self.generators.shutdown(wait=False, cancel_futures=True)
        self.decoders.shutdown(wait=False, cancel_futures=True)


# -----------------------------------------------------------------------------
# The app

def ocr_record(out):
    rec = {"text": out["text"], "tokens": out["num_tokens"], "seconds": out["seconds"]}
    if out["finish_reason"] == "length":
        rec["truncated"] = True  # as `nanoocr read` marks it
    return rec


def is_true(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def parse_data_uri(url):
    """An image_url's url -> bytes. Only data: URIs: the server fetches nothing from the network."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ApiError(400, "image_url must be a data: URI (data:image/png;base64,...); the server does not "
                            "fetch URLs")
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        raise ApiError(400, "image_url data: URI must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"image_url data: URI is not valid base64 ({e})")


def parse_chat(payload):
    """OpenAI-style chat request -> (image data URI, prompt). The image and the prompt come from the
    last user message: its image_url part (exactly one) and its text parts. System messages and
    earlier turns are ignored: an OCR model reads one image against one instruction."""
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ApiError(400, "no user message")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise ApiError(400, "message content must be a string or a list of parts")
    images, texts = [], []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            image_url = part.get("image_url")
            images.append(image_url.get("url") if isinstance(image_url, dict) else image_url)
        elif kind == "text":
            texts.append(str(part.get("text", "")))
        else:
            raise ApiError(400, f"unsupported content part {kind!r}: use text and image_url parts")
    if len(images) != 1:
        raise ApiError(400, f"the last user message must hold exactly one image_url part, found {len(images)}")
    prompt = "\n".join(t for t in texts if t.strip()).strip() or None
    return images[0], prompt


def create_app(server):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.shutdown()  # stop running generations instead of waiting for them

    app = FastAPI(title="nanoocr", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    with open(PAGE_PATH, encoding="utf-8") as f:
        page = f.read()  # read once: the page is static

    @app.get("/")
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return server.info()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "nanoocr"}]}

    @app.post("/ocr")
    async def ocr(request: Request):
        async def handle(body, deadline):
            req = body.limited_request()
            if not req.headers.get("content-type", "").startswith("multipart/form-data"):
                raise ApiError(400, "send multipart/form-data with the image in a file field named `image` "
                                    "(curl -F image=@page.png URL/ocr)")
            form = await server.until(req.form(max_files=1, max_fields=8), deadline, status=408)
            try:
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise ApiError(400, "no image: send it as a file field named `image` (curl -F image=@page.png)")
                data = await upload.read()
                name = upload.filename or "upload"
                fields = {k: form.get(k) for k in ("mode", "prompt", "max_tokens", "stream")}
            finally:
                await form.close()  # spooled temporary files
            job = await server.prepare(data, name, fields["mode"], fields["prompt"], fields["max_tokens"], deadline)
            del data, form  # the pixels live in the job now; don't hold the upload through generation
            server.submit(job)
            if not is_true(fields["stream"]):
                return JSONResponse(ocr_record(await server.result(job, request)))
            return StreamingResponse(ocr_stream(job, request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await server.guarded(request, server.max_upload + FORM_SLACK, handle)

    async def ocr_stream(job, request):
        deltas = Deltas()
        try:
            async for event in server.events(job, request):
                if event[0] == "queued":
                    yield sse({"waiting_for": event[1]}, "queued")
                elif event[0] == "token":
                    yield sse({"delta": deltas.update(event[1]), "tokens": event[2]}, "token")
                elif event[0] == "done":
                    piece = deltas.update(event[1]["text"], final=True)
                    if piece:
                        yield sse({"delta": piece}, "token")
                    yield sse(ocr_record(event[1]), "done")
                else:
                    yield sse({"error": event[1].message, "status": event[1].status}, "error")
        except ApiError as e:
            yield sse({"error": e.message, "status": e.status}, "error")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        async def handle(body, deadline):
            req = body.limited_request()
            raw = await server.until(req.body(), deadline, status=408)
            try:
                payload = json.loads(raw)
            except ValueError as e:
                raise ApiError(400, f"the request body is not valid JSON ({e})")
            url, prompt = parse_chat(payload)
            if isinstance(url, str) and len(url) * 3 // 4 > server.max_upload + 3:
                raise ApiError(413, f"image is about {len(url) * 3 / 4 / MB:.1f} MB; the limit is "
                                    f"{server.max_upload / MB:g} MB")
            data = parse_data_uri(url)
            max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
            sampling = chat_sampling(payload)
            stream = bool(payload.get("stream"))
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            job = await server.prepare(data, "image_url", payload.get("mode"), prompt, max_tokens, deadline, sampling)
            del raw, payload, url, data  # the request's megabytes of base64 are not needed during generation
            server.submit(job)
            meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                    "model": server.model_name}  # dict(meta, object=...) keeps OpenAI's key order
            if not stream:
                out = await server.result(job, request)
                return JSONResponse(dict(meta, object="chat.completion", choices=[{
                    "index": 0, "message": {"role": "assistant", "content": out["text"]},
                    "finish_reason": out["finish_reason"], "logprobs": None}], usage=usage(job, out)))
            return StreamingResponse(chat_stream(job, request, meta, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        # the image travels base64-encoded inside JSON: 4/3 of its size, plus the messages around it
        return await server.guarded(request, server.max_upload * 4 // 3 + FORM_SLACK, handle, openai=True)

    async def chat_stream(job, request, meta, include_usage):
        def chunk(delta, finish_reason=None):
            return dict(meta, object="chat.completion.chunk",
                        choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])
        deltas = Deltas()
        yield sse(chunk({"role": "assistant", "content": ""}))
        try:
            async for event in server.events(job, request):
                if event[0] == "token":
                    piece = deltas.update(event[1])
                    if piece:
                        yield sse(chunk({"content": piece}))
                elif event[0] == "done":
                    out = event[1]
                    piece = deltas.update(out["text"], final=True)
                    if piece:
                        yield sse(chunk({"content": piece}))
                    yield sse(chunk({}, out["finish_reason"]))
                    if include_usage:
                        yield sse(dict(meta, object="chat.completion.chunk", choices=[], usage=usage(job, out)))
                elif event[0] == "error":
                    raise event[1]
        except ApiError as e:
            yield sse(error_body(e.message, e.status, openai=True))
            return  # OpenAI ends an errored stream without [DONE]
        yield "data: [DONE]\n\n"

    return app


def chat_sampling(payload):
    """OpenAI sampling fields -> generate()'s; absent means greedy (what OCR wants, and what
    `nanoocr read` does)."""
    out = {}
    try:
        if payload.get("temperature") is not None:
            out["temperature"] = float(payload["temperature"])
            if not 0 <= out["temperature"] <= 2:
                raise ValueError("temperature must be between 0 and 2")
        if payload.get("top_p") is not None:
            out["top_p"] = float(payload["top_p"])
            if not 0 < out["top_p"] <= 1:
                raise ValueError("top_p must be in (0, 1]")
        if payload.get("seed") is not None:
            out["seed"] = int(payload["seed"])
    except (TypeError, ValueError) as e:
        raise ApiError(400, str(e))
    return out


def usage(job, out):
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": out["num_tokens"],
            "total_tokens": job.prompt_tokens + out["num_tokens"]}


# -----------------------------------------------------------------------------
# Command line

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="nanoocr serve", description="Serve a model: web page + JSON / OpenAI-style API.",
        epilog="Options are spelled --key_name, as in `nanoocr eval` / `sample` / `train`; the older "
               "--key-name spellings (--max-upload-mb, ...) are accepted as aliases until the next release.")
    parser.add_argument("--model", default=None, help="checkpoint or export directory (default: the newest trained model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s; the server has no authentication)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=1, help="generations running at once (default: %(default)s)")
    parser.add_argument("--queue", type=int, default=16,
                        help="requests waiting beyond those; more get 503 + Retry-After (default: %(default)s)")
    parser.add_argument("--max_upload_mb", "--max-upload-mb", type=float, default=20.0, help="largest image accepted (default: %(default)s)")
    parser.add_argument("--max_pixels", "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest image in pixels, checked before decoding (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a request may take from arrival to its last token (default: %(default)s)")
    parser.add_argument("--max_tokens_cap", "--max-tokens-cap", type=int, default=None,
                        help="most answer tokens a request may ask for (default: the model's sequence length)")
    parser.add_argument("--device", default="", help="cuda | mps | cpu (default: autodetect)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if args.concurrency < 1 or args.queue < 0:
        parser.error("--concurrency must be >= 1 and --queue >= 0")
    if args.max_upload_mb <= 0 or args.timeout <= 0 or args.max_pixels < 1:
        parser.error("--max_upload_mb, --timeout and --max_pixels must be positive")
    if args.max_tokens_cap is not None and args.max_tokens_cap < 1:
        parser.error("--max_tokens_cap must be >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        model_dir, model, tokenizer, meta, device_type = reader.open_model(args.model, args.device)
    except reader.MODEL_ERRORS as e:
        print(f"nanoocr serve: {e}", file=sys.stderr)
        return 2
    server = OcrServer(model, tokenizer, meta, model_dir, concurrency=args.concurrency, queue=args.queue,
                       max_upload_mb=args.max_upload_mb, timeout=args.timeout, max_tokens_cap=args.max_tokens_cap,
                       max_pixels=args.max_pixels,
                       autocast_dtype=reader.read_autocast_dtype(device_type))  # as `nanoocr read`
    # bind the socket ourselves: --port 0 then gets a free port we can print (tests use this), and a
    # port already in use fails here with a plain message
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"nanoocr serve: cannot listen on {args.host}:{args.port} ({e.strerror or e}); pick another --port",
              file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}"
    print(f"nanoocr serve: {server.model_name} on {device_type}, mode {server.mode_name(server.mode)}, "
          f"concurrency {args.concurrency}, queue {args.queue}")
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"nanoocr serve: WARNING: listening on {host}: anyone who can reach it can use the model (no authentication)")
    print(f"nanoocr serve: listening on {url}", flush=True)
    # uvicorn answers 503 itself beyond this many open connections: it bounds the uploads being read
    # and checked at once (each at most --max_upload_mb), which happens before admission
    config = uvicorn.Config(create_app(server), log_level="info", timeout_keep_alive=5,
                            timeout_graceful_shutdown=5, limit_concurrency=2 * server.capacity + 32)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
