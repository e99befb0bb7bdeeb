"""
The model behind `nanoocr serve`'s bounded queue, and what the queue needs from a request: the API's
errors (ApiError with its status), a request body read under a size limit (LimitedBody), event-stream
framing, and OcrServer -- --concurrency worker threads generating with the one model, at most
--concurrency + --queue jobs admitted, each with its deadline. scripts/serve.py is the web page, the
routes and the command line on top of it.
"""

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import os
import threading
import time
import traceback

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from nanoocr import reader
from nanoocr.deepencoder import num_image_tokens
from nanoocr.documents import DEFAULT_DPI, count_pages, is_pdf, open_pages
from nanoocr.engine import prompt_ids
from nanoocr.image_process import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    describe_non_image,
    sniff_image_type,
)
from nanoocr.joint_decode import default_decoder
from nanoocr.modes import DEFAULT_PROMPT, MODES, check_mode, default_mode, parse_mode

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
        self.pages = None  # a PDF: [{"page", "size", "line_ids" / "n_lines"} or {"page", "error"}] (split_pages)

    def emit(self, *event):
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # the loop is gone (server shutting down): nobody is listening

    def expired(self):
        return self.cancelled.is_set() or time.monotonic() > self.deadline


class Slot:
    """A place in the queue, taken before a request's body is read and given back exactly once: by
    the handler's end when no job was started, else by the job's generation thread finishing."""

    def __init__(self, server):
        self.server, self.owned_by_job, self.released = server, False, False

    def release(self):
        if not self.released:
            self.released = True
            self.server.active -= 1


class OcrServer:
    """The model, its limits and its queue.

    Admission comes first: a request takes a place in the queue (at most concurrency + queue at a
    time; beyond, a 503 with Retry-After at once) before a byte of its body is read, so a burst of
    uploads never holds more than that many bodies and decoded images however many clients send.
    Then the request is checked -- size (413), format (415), parameters and the decoded image (400)
    -- and generated; its place is given back when its generation thread ends, or as soon as it
    fails a check. Decoding runs on two threads of its own, so the images being decoded at once are
    bounded too. The count is kept on the event loop thread only, so it needs no lock."""

    def __init__(self, model, tokenizer, meta, model_dir="", concurrency=1, queue=16, max_upload_mb=20.0,
                 timeout=120.0, max_tokens_cap=None, max_pixels=DEFAULT_MAX_PIXELS, autocast_dtype=None,
                 api_key=None, decoder=None, max_pages=20, dpi=DEFAULT_DPI):
        self.model, self.tokenizer, self.meta = model.eval(), tokenizer, meta
        self.decoder = decoder  # joint | gpt | ctc, None = the model's default per mode (nanoocr/joint_decode.py)
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
        self.max_pages, self.dpi = max_pages, dpi  # PDFs on /ocr: at most this many pages, rendered at dpi
        self.active = 0  # places taken: requests being read and checked, and jobs queued or generating
        self.avg_seconds = 1.0  # running mean of generation time, for Retry-After
        self.jobs = set()
        self.api_key = api_key or None  # None: no key required (the server binds 127.0.0.1 by default)
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
                "max_upload_mb": self.max_upload / MB, "active": self.active, "capacity": self.capacity,
                "allowed_modes": self.allowed_modes(), "api_key_required": self.api_key is not None}

    # --- admission -----------------------------------------------------------------------------------

    def allowed_modes(self):
        """What a request may ask for: the named modes and the model's own trained size. Any other
        fixed HxW is refused: its size is the client's choice, and cutting a page into 16384x16384
        strips allocates gigabytes before anything else is checked."""
        return list(MODES) + ([self.mode_name(self.mode)] if isinstance(self.mode, tuple) else [])

    def check_key(self, request):
        """--api_key: the request must carry `Authorization: Bearer KEY` (what OpenAI's and vLLM's
        clients send); compared in constant time."""
        if self.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "this server needs an API key: send the header `Authorization: Bearer KEY`",
                           {"WWW-Authenticate": "Bearer"})

    def reserve(self):
        """A place in the queue (Slot), or a 503 with Retry-After when all are taken."""
        if self.active >= self.capacity:
            wait = max(1, min(60, round(self.avg_seconds * self.active / self.concurrency)))
            raise ApiError(503, f"the server is busy ({self.active} requests queued or running, the limit is "
                                f"{self.capacity}); retry in {wait} s", {"Retry-After": str(wait)})
        self.active += 1
        return Slot(self)

    async def guarded(self, request, body_limit, handler, openai=False):
        """Check the key, take a place in the queue, run handler(body, deadline, slot), and turn an
        ApiError (and the body limit's) into a status with a readable body, in /ocr's shape or
        OpenAI's. The place is given back here unless the handler started a job with it."""
        deadline = time.monotonic() + self.timeout
        body = LimitedBody(request, body_limit)
        slot = None
        try:
            self.check_key(request)
            slot = self.reserve()
            return await handler(body, deadline, slot)
        except ClientDisconnect:
            return JSONResponse(error_body("client disconnected", 499, openai), status_code=499)
        except (ApiError, BodyTooLarge, HTTPException) as e:
            if isinstance(e, BodyTooLarge):
                e = ApiError(413, f"request body over the limit of {body_limit / MB:.1f} MB "
                                  f"(the server's --max_upload_mb is {self.max_upload / MB:g})")
            elif isinstance(e, HTTPException):  # Starlette's own 400s (malformed multipart, ...)
                e = ApiError(e.status_code, str(e.detail))
            if slot is not None and not slot.owned_by_job:
                slot.release()  # before draining: the place is free for the next request already
            if e.status != 408:  # a client too slow to send its body will not drain faster
                await body.drain(5.0)
            return self.error_response(e, openai, close=not body.done)
        finally:
            if slot is not None and not slot.owned_by_job:
                slot.release()

    def error_response(self, e, openai, close=False):
        headers = dict(e.headers, **({"Connection": "close"} if close else {}))
        return JSONResponse(error_body(e.message, e.status, openai), status_code=e.status, headers=headers)

    # --- inputs --------------------------------------------------------------------------------------

    def check_params(self, mode, prompt, max_tokens):
        """Request parameters -> (mode, prompt, max_tokens) or a 400 that says what is allowed."""
        if mode is not None and not isinstance(mode, str):
            raise ApiError(400, f"mode must be a string (one of {', '.join(self.allowed_modes())}), got {mode!r}")
        try:
            mode = check_mode(self.model.encoder.config, parse_mode(mode) if mode else self.mode)
        except (ValueError, AssertionError) as e:
            raise ApiError(400, f"{e}; this server reads with {', '.join(self.allowed_modes())}")
        if isinstance(mode, tuple) and mode != self.mode:
            raise ApiError(400, f"mode {self.mode_name(mode)} is not allowed: use one of "
                                f"{', '.join(self.allowed_modes())} (a fixed size must be the model's trained one)")
        prompt = DEFAULT_PROMPT if prompt is None or not str(prompt).strip() else str(prompt)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(400, f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if max_tokens is None or max_tokens == "":
            max_tokens = self.max_tokens
        if isinstance(max_tokens, (bool, float)) or not isinstance(max_tokens, (int, str)):
            raise ApiError(400, f"max_tokens must be an integer, got {max_tokens!r}")
        try:
            max_tokens = int(max_tokens)
        except (TypeError, ValueError):
            raise ApiError(400, f"max_tokens must be an integer, got {max_tokens!r}")
        if not 1 <= max_tokens <= self.max_tokens_cap:
            raise ApiError(400, f"max_tokens must be between 1 and {self.max_tokens_cap} (the server's cap), "
                                f"got {max_tokens}")
        return mode, prompt, max_tokens

    def check_bytes(self, data, documents=False):
        """Size (413) and format (415); documents=True (/ocr) also takes PDFs, at most max_pages pages."""
        if len(data) > self.max_upload:
            raise ApiError(413, f"image is {len(data) / MB:.1f} MB; the limit is {self.max_upload / MB:g} MB")
        if documents and is_pdf(data[:1024]):
            n = count_pages(data)
            if n > self.max_pages:
                raise ApiError(413, f"the PDF has {n} pages; this server reads at most {self.max_pages} per request "
                                    f"(--max_pages): send fewer pages, or use `nanoocr read`")
            return
        if sniff_image_type(data) is None:
            # image_process's sniffer names the usual impostors (PDF, SVG, an HTML error page)
            raise ApiError(415, f"not an image the server reads: {describe_non_image(data[:1024])} "
                                f"(accepted: PNG, JPEG, GIF, BMP, TIFF, WEBP, PNM)")

    def decode(self, data, name, mode):
        """Bytes -> ([(line index, process_image dict)], pages) (in a decoder thread): one view, or for
        a strip model an image of another size cut into lines and word groups as `nanoocr read` cuts
        it (reader.load_views, as `nanoocr read` loads files); a broken or oversized image is a 400.
        pages: None for an image, decode_pdf's for a PDF."""
        try:
            if is_pdf(data[:1024]):
                return self.decode_pdf(data, name, mode)
            return reader.load_views(self.model, data, mode, self.max_words, name=name, max_pixels=self.max_pixels), None
        except ImageError as e:
            raise ApiError(400, str(e))

    def decode_pdf(self, data, name, mode):
        """A PDF -> (every page's views in one list, pages). Each page's line indices are moved past
        the previous page's, so the pages' lines stay apart when the texts are joined by line; pages
        records which line ids each page holds (settle_pages counts them for split_pages, which cuts
        the result back) or why it failed."""
        views, pages, offset = [], [], 0
        for k, image in open_pages(data, name, self.dpi, self.max_pixels, self.max_pages):
            if isinstance(image, ImageError):
                pages.append({"page": k, "error": str(image)})
                continue
            page_views = reader.strip_views(self.model, image, mode, self.max_words)
            # a page the layout could not tell upright from upside down carries the other way up
            # (reader.settle_turn), whose lines may number differently: its ids are moved too, and
            # the page's line count is known once the generation thread has settled it
            alt = page_views[0][1].get("other_way_up") if page_views else None
            ids = {li for li, _ in page_views} | ({li for li, _ in alt["views"]} if alt else set())
            span = max(ids) + 1 if ids else 0
            views += [(offset + li, p) for li, p in page_views]
            if alt:
                alt["views"] = [(offset + li, p) for li, p in alt["views"]]
            pages.append({"page": k, "size": list(image.size), "line_ids": (offset, offset + span)})
            offset += span
        if all("error" in p for p in pages):
            raise ApiError(400, "no page of the PDF could be read: " + "; ".join(p["error"] for p in pages[:3]))
        return views, pages

    async def prepare(self, data, name, mode, prompt, max_tokens, deadline, sampling=None, documents=False):
        """Validated bytes + parameters -> a Job ready to submit (every input error raised before a
        stream starts, so each gets its real status). documents: PDFs are taken too (/ocr)."""
        mode, prompt, max_tokens = self.check_params(mode, prompt, max_tokens)
        self.check_bytes(data, documents)
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        views, pages = await self.until(loop.run_in_executor(self.decoders, self.decode, data, name, mode), deadline)
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
        # sampling (temperature / top_p) draws from the GPT alone; greedy reads use the server's --decoder
        job.decoder = "gpt" if sampling else (self.decoder or default_decoder(self.model, mode))
        if job.decoder != "gpt" and not isinstance(mode, tuple):
            job.decoder = "gpt"  # a whole-image mode: the CTC head reads one-line strips only
        job.prompt_tokens = prompt_len
        job.pages = pages
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

    def submit(self, job, slot):
        """Hand the job to a generation thread with the request's place in the queue (slot); the
        place is given back when that thread is done with it, whatever happened to the client."""
        slot.owned_by_job = True
        self.jobs.add(job)
        # how many jobs must finish before this one starts (FIFO), sent before any token can be
        job.emit("queued", max(0, len(self.jobs) - self.concurrency))  # jobs only: requests still uploading are not ahead
        future = asyncio.get_running_loop().run_in_executor(self.generators, self.run_job, job)

        def finished(_):  # runs on the event loop
            self.jobs.discard(job)
            slot.release()
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
        kw = dict(max_tokens=job.max_tokens, no_repeat_ngram_size=reader.NO_REPEAT_NGRAM,
                  no_repeat_window=reader.NO_REPEAT_WINDOW, autocast_dtype=self.autocast_dtype, decoder=job.decoder,
                  **job.sampling)
        try:
            if job.pages is not None:  # a PDF: its pages' turns settled first, so each page's line count is known
                job.views = reader.settle_turn(self.model, self.tokenizer, job.views, job.prompt, **kw)
                settle_pages(job.pages, job.views)
            # one piece at a time (batch_size 1), so the streamed text only ever grows
            out = reader.generate_views(self.model, self.tokenizer, [job.views], [job.prompt], batch_size=1,
                                        callback=on_token, **kw)[0]
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
        if job.pages is not None:
            out["pages"] = split_pages(out["lines"], job.pages)
        job.emit("done", out)

    async def events(self, job, request):
        """The job's events as they come, ending with done or error. Stops the job when the deadline
        passes or the client goes away: checked at least once a second, tokens flowing or not (a
        non-streaming request's client sees no tokens, so its leaving shows only this way)."""
        checked = time.monotonic()
        try:
            while True:
                left = job.deadline - time.monotonic()
                if left <= 0:
                    raise self.timed_out()
                try:
                    event = await asyncio.wait_for(job.events.get(), min(left, 1.0))
                except asyncio.TimeoutError:
                    event = None
                if time.monotonic() - checked >= 1.0 or event is None:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return
                if event is None:
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


def settle_pages(pages, views):
    """A PDF job's pages (decode_pdf: each page's range of line ids) and its settled views
    (reader.settle_turn) -> each page's "n_lines": how many of those ids its views hold."""
    for p in pages:
        if "line_ids" in p:
            a, b = p.pop("line_ids")
            p["n_lines"] = len({li for li, _ in views if a <= li < b})


def split_pages(lines, pages):
    """A PDF job's lines (all pages', in order) -> its pages: {"page", "size", "text", "lines"}, or
    {"page", "error"} for a page that could not be read."""
    out, k = [], 0
    for p in pages:
        if "error" in p:
            out.append(p)
            continue
        mine, k = lines[k:k + p["n_lines"]], k + p["n_lines"]
        out.append({"page": p["page"], "size": p["size"], "text": "\n".join(l["text"] for l in mine), "lines": mine})
    return out
