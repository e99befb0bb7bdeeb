"""
Serve a trained model over HTTP: a web page, a JSON API and an OpenAI-style endpoint.

    nanoocr serve                                  # newest trained model, http://127.0.0.1:8000
    nanoocr serve --model exported/cpu --port 8080 --concurrency 2 --queue 32

    GET  /                      the page: drop, paste or pick an image, watch the text stream in
    POST /ocr                   multipart: image (file; an image or a PDF of at most --max_pages pages),
                                optional mode, prompt, max_tokens, stream
                                -> {"text", "tokens", "seconds", "lines": [{"text", "box", "confidence"}]}
                                (a PDF: "pages": [{"page", "size", "text", "lines"} or {"page", "error"}]
                                instead of "lines"; + "truncated": true when max_tokens cut it;
                                seconds = decoding + generation, not time spent queued),
                                or with stream=true an event stream (queued / token / done / error)
    POST /v1/chat/completions   OpenAI-style: one user message whose content holds an image_url part
                                with a data: URI (+ text parts = the prompt); "stream": true -> SSE
                                chat.completion.chunk events ending with `data: [DONE]`
    GET  /v1/models             the one model, for clients that list models first
    GET  /health                status, defaults (mode, prompt, max tokens) and queue occupancy

    curl -F image=@page.png -F mode=base http://127.0.0.1:8000/ocr

One model instance serves everything. A request first needs the key if there is one (--api_key or
$NANOOCR_API_KEY: `Authorization: Bearer KEY`, else 401; / and /health stay open), then a place in
the queue, taken before its body is read: at most --concurrency + --queue requests at a time, a 503
with Retry-After at once beyond. Then limits, each with its own status: 413 body/upload over
--max_upload_mb (counted while reading, never buffered past the limit), 415 bytes that are not an
image whatever the name or declared type says, or a JSON endpoint posted without
`Content-Type: application/json`, 400 corrupt image / too many pixels / a malformed field / a mode
other than the named ones and the model's trained size, 408 a body that takes longer than --timeout
to arrive. --concurrency worker threads generate, so the event loop keeps answering /health and
streaming tokens while the model runs. A client that goes away stops its generation within a second.
504: not done within --timeout of arrival (a stream gets an error event instead, its 200 having
been sent already).

Generation is exactly `nanoocr read`'s: same defaults (training mode, "Free OCR.", the model's
sequence length as max tokens, the no-repeat rule), greedy, so the page, the API and `read` agree
on every image. The server binds 127.0.0.1 unless told otherwise (README, Security).
"""

import argparse
import base64
import binascii
import contextlib
import json
import os
import socket
import sys
import time
import uuid

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from nanoocr import reader
from nanoocr.documents import DEFAULT_DPI
from nanoocr.image_process import DEFAULT_MAX_PIXELS
from nanoocr.joint_decode import DECODERS, check_decoder
from nanoocr.modes import default_mode
from scripts.serve_queue import (
    FORM_SLACK,
    MB,
    ApiError,
    Deltas,
    OcrServer,
    error_body,
    sse,
)

PAGE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_page.html")


# -----------------------------------------------------------------------------
# The app

def ocr_record(out):
    rec = {"text": out["text"], "tokens": out["num_tokens"], "seconds": out["seconds"]}
    if "pages" in out:  # a PDF: per page its size, text and lines
        rec["pages"] = out["pages"]
    else:  # boxes in the uploaded image's pixels, confidence in [0, 1], as `nanoocr read --format jsonl`
        rec["lines"] = out["lines"]
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
    async def models(request: Request):
        try:
            server.check_key(request)
        except ApiError as e:
            return server.error_response(e, openai=True)
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "nanoocr"}]}

    @app.post("/ocr")
    async def ocr(request: Request):
        async def handle(body, deadline, slot):
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
            job = await server.prepare(data, name, fields["mode"], fields["prompt"], fields["max_tokens"], deadline,
                                       documents=True)
            del data, form  # the pixels live in the job now; don't hold the upload through generation
            server.submit(job, slot)
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
        async def handle(body, deadline, slot):
            # JSON only as application/json: a web page of another origin can post text/plain (or a
            # form) without asking the browser's permission first, application/json it cannot
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise ApiError(415, f"send the request as JSON with `Content-Type: application/json` (got "
                                    f"{ctype or 'no Content-Type'})")
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
            stream, include_usage = chat_stream_options(payload)
            job = await server.prepare(data, "image_url", payload.get("mode"), prompt, max_tokens, deadline, sampling)
            del raw, payload, url, data  # the request's megabytes of base64 are not needed during generation
            server.submit(job, slot)
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


def chat_stream_options(payload):
    """"stream" (a JSON boolean) and "stream_options" (an object: include_usage, a boolean) ->
    (stream, include_usage), or a 400 that says which field is wrong."""
    stream, options = payload.get("stream", False), payload.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, f"stream_options must be an object like {{\"include_usage\": true}}, got {options!r}")
    include_usage = (options or {}).get("include_usage", False)
    if include_usage is not None and not isinstance(include_usage, bool):
        raise ApiError(400, f"stream_options.include_usage must be true or false, got {include_usage!r}")
    return bool(stream), bool(include_usage)


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
                        help="address to bind (default: %(default)s; elsewhere, set --api_key)")
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
    parser.add_argument("--api_key", "--api-key", default=os.environ.get("NANOOCR_API_KEY") or None,
                        help="require `Authorization: Bearer KEY` on the API (/ocr, /v1/...); default: "
                             "$NANOOCR_API_KEY, else no key (a key on the command line is visible in `ps`)")
    parser.add_argument("--decoder", default=None, choices=DECODERS,
                        help="joint (beam search over the GPT with the CTC head's score) | gpt | ctc (default: joint "
                             "for a model with a CTC head reading strips, else gpt); sampling requests use the GPT")
    parser.add_argument("--max_pages", type=int, default=20,
                        help="most pages of a PDF sent to /ocr (more: 413; default: %(default)s)")
    parser.add_argument("--dpi", type=float, default=DEFAULT_DPI, help="PDF pages are rendered at this resolution (default: %(default)s)")
    parser.add_argument("--device", default="", help="cuda | mps | cpu (default: autodetect)")
    args = parser.parse_args(argv)
    if args.max_pages < 1 or not 10 <= args.dpi <= 1200:
        parser.error("--max_pages must be >= 1 and --dpi between 10 and 1200")
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
        if args.decoder:
            check_decoder(model, default_mode(meta), args.decoder)
    except reader.MODEL_ERRORS as e:  # (check_decoder's are ValueErrors)
        print(f"nanoocr serve: {e}", file=sys.stderr)
        return 2
    server = OcrServer(model, tokenizer, meta, model_dir, concurrency=args.concurrency, queue=args.queue,
                       max_upload_mb=args.max_upload_mb, timeout=args.timeout, max_tokens_cap=args.max_tokens_cap,
                       max_pixels=args.max_pixels, api_key=args.api_key, decoder=args.decoder,
                       max_pages=args.max_pages, dpi=args.dpi,
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
    if host not in ("127.0.0.1", "::1", "localhost") and not args.api_key:
        print(f"nanoocr serve: WARNING: listening on {host} without --api_key: anyone who can reach it can use the model")
    print(f"nanoocr serve: listening on {url}", flush=True)
    # admission comes before a body is read, so connections beyond the queue cost a socket and a 503
    # each; uvicorn's own limit (a bare 503, no Retry-After) is only the last guard on open sockets
    config = uvicorn.Config(create_app(server), log_level="info", timeout_keep_alive=5,
                            timeout_graceful_shutdown=5, limit_concurrency=4 * server.capacity + 256)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
