"""
Read text out of images and documents with a trained model.

    nanoocr read page.png                          # one image: its text on stdout
    nanoocr read scans/ more/*.jpg --jsonl out.jsonl
    nanoocr read report.pdf --format hocr          # -> report.hocr beside it (one file per document)
    nanoocr read a.pdf b.tif --format pdf --out all.pdf   # one searchable PDF of every page
    cat page.png | nanoocr read -                  # an image or a PDF on stdin
    nanoocr read x.png --model exported/cpu --mode 32x256 --prompt "Free OCR." --max_tokens 200

PATHs are image files, PDFs (each page rendered at --dpi), multi-page TIFFs (every frame),
directories (searched recursively for image and .pdf extensions), globs, and `-` for one file on
stdin. --format:
  text   the text (pages of several inputs or pages separated by a form feed line); the default
         for one input without --jsonl;
  jsonl  one JSON line per page, {"image": path, "page": n, "text": ..., "lines": [{"text", "box":
         [left, top, right, bottom], "confidence", ("words": [...] where the line was cut)}],
         "tokens": n, "seconds": s} (+ "truncated": true when --max_tokens cut it); the default
         for several inputs, to stdout or --jsonl;
  hocr   hOCR (XHTML with ocr_page / ocr_line / ocrx_word, bbox, x_wconf; nanoocr/outputs.py);
  pdf    a searchable PDF: the page images with the text invisible on its lines.
hocr and pdf write one file per input document beside it (<name>.hocr, <name>.ocr.pdf), or all
pages into one file with --out (which text and jsonl also take). Boxes are in the pixels of the
image as given (a PDF page: as rendered at --dpi); confidence is in [0, 1] (reader.line_confidence).
The confidence comes from the joint decoder (nanoocr/joint_decode.py) where the model has a CTC
head, else from the GPT's token probabilities; --decoder picks. A page or image that cannot be read
(or is no regular file, a FIFO; or on which anything unexpected fails) yields {"image": path, "page":
n, "error": ...} and the others continue; the exit status is 1 if any failed. Files a directory holds
with other extensions, and hidden files and folders, are skipped and counted on stderr.

--jsonl OUT resumes: a rerun with the same OUT skips the inputs OUT already holds a text for (a
document: any of its pages) and appends the rest (inputs with only error records are read again); OUT
is never truncated. A file name that is not UTF-8 is written with its odd bytes as \\xNN. "seconds" is the page's own loading time plus its
share of its batch's generation time. Reading more than one page shows a progress bar on stderr.

--model: a checkpoint directory or a `nanoocr export` directory; default the newest trained model
under the base dir. --mode: default the mode the model was trained with.

A model trained on fixed HxW strips (the CPU recipe's 32x256 lines) reads an image of exactly that
size as it is; any other image (a long line, a paragraph, a crop of a page) is first cut into lines
and word groups the size the model trained on (nanoocr/strips.py), and the pieces' texts are joined
back into lines. --whole reads the image stretched to the strip instead (the model then sees what
it never trained on). "strips" in a JSON line counts the pieces.
"""

import argparse
import glob
import json
import os
import sys
import time

from tqdm import tqdm

from nanoocr import reader
from nanoocr.documents import DEFAULT_DPI, count_pages
from nanoocr.joint_decode import DECODERS, check_decoder
from nanoocr.modes import DEFAULT_PROMPT, resolve_mode
from nanoocr.outputs import write_hocr, write_pdf
from tasks.common import IMAGE_EXTS
from tasks.image_folder import iter_images

INPUT_EXTS = IMAGE_EXTS + (".pdf",)  # what a directory or a glob contributes
FORMATS = ("text", "jsonl", "hocr", "pdf")
STDIN = "-"


def display_name(path):
    """A path as records and messages name it: a file name that is not UTF-8 (an old Latin-1 disk)
    reaches Python as lone surrogates, which no UTF-8 output can hold; its odd bytes are written
    as \\xNN instead. The same path always gets the same name, so --jsonl resuming matches it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def collect_images(paths, skipped=None):
    """PATH arguments -> ordered, de-duplicated [(path, error or None)]. A named file is taken
    whatever its extension (load_image sniffs the content); directories and globs contribute
    image and PDF files by extension (what they leave out is counted in `skipped`, see iter_images);
    "-" stays "-" (stdin). A path that matches nothing becomes an error record, and so does one that
    is not a regular file."""
    out, seen = [], set()

    def add(p, err=None):
        key = p if p == STDIN else os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append((p, err))

    for p in paths:
        if p == STDIN:
            add(p)
        elif os.path.isdir(p):
            for f in iter_images(p, skipped, INPUT_EXTS):
                add(f)
        elif os.path.isfile(p):
            add(p)
        elif os.path.exists(p):  # a FIFO or a device: reading it could block the run forever
            add(p, f"not a regular file ({reader.not_a_regular_file(p)}); skipped")
        elif glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            images = [m for m in matches if os.path.isfile(m) and m.lower().endswith(INPUT_EXTS)]
            for m in matches:
                if os.path.isdir(m):
                    images.extend(iter_images(m, skipped, INPUT_EXTS))
            if not images:
                add(p, "no image files match this pattern")
            for m in images:
                add(m)
        else:
            add(p, "no such file or directory")
    return out


def report_skipped(skipped):
    """What directories left out, on stderr: so a folder of .heic photos does not read as 'nothing there'."""
    exts = skipped.get("extensions", {})
    if exts:
        listed = ", ".join(f"{e} x{n}" if n > 1 else e for e, n in sorted(exts.items(), key=lambda kv: (-kv[1], kv[0])))
        print(f"nanoocr read: skipped {sum(exts.values())} files that are not images by extension ({listed}); "
              f"name a file directly to read it whatever its extension", file=sys.stderr)
    hidden = skipped.get("hidden", [])
    if hidden:
        shown = ", ".join(display_name(h) for h in hidden[:5]) + (f", ... ({len(hidden)} in all)" if len(hidden) > 5 else "")
        print(f"nanoocr read: skipped {len(hidden)} hidden files and folders: {shown}", file=sys.stderr)


def already_read(path):
    """The images an earlier `--jsonl OUT` run wrote a text for (error records don't count: those
    images are read again). -> (set of names, whether the file ends mid-line). A line that is not
    JSON -- the last one of a run killed while writing it -- is left where it is and ignored."""
    if not os.path.isfile(path):
        return set(), False
    with open(path, "rb") as f:
        data = f.read()
    done = set()
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("image"), str) and "error" not in rec:
            done.add(rec["image"])
    return done, bool(data) and not data.endswith(b"\n")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="nanoocr read", description="Read text out of images and documents (PDF, multi-page TIFF).",
        epilog="Options are spelled --key_name, as in `nanoocr eval` / `sample` / `train`; the older "
               "--key-name spellings (--max-tokens, --batch-size, ...) are accepted as aliases until the next release.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="images, PDFs, multi-page TIFFs, directories (recursive), globs, or - for stdin")
    parser.add_argument("--model", default=None, help="checkpoint or export directory (default: the newest trained model)")
    parser.add_argument("--mode", default=None,
                        help="tiny | small | base | large | gundam, or HxW for fixed strips (default: the training mode)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the instruction after the image (default: %(default)r)")
    parser.add_argument("--max_tokens", "--max-tokens", type=int, default=None,
                        help="most answer tokens per image (default: the model's training sequence length)")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8,
                        help="pages generated together (default: %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="text | jsonl | hocr | pdf (default: text for one input, jsonl for several)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write everything into FILE (hocr / pdf: one file of all pages instead of one per document)")
    parser.add_argument("--jsonl", default=None, metavar="OUT", help="write the JSON lines to OUT instead of stdout")
    parser.add_argument("--dpi", type=float, default=DEFAULT_DPI, help="PDF pages are rendered at this resolution (default: %(default)s)")
    parser.add_argument("--no_repeat_ngram", "--no-repeat-ngram", type=int, default=reader.NO_REPEAT_NGRAM,
                        help="ban repeating any n-gram of this many tokens (0 = off; default %(default)s, as DeepSeek-OCR)")
    parser.add_argument("--no_repeat_window", "--no-repeat-window", type=int, default=reader.NO_REPEAT_WINDOW,
                        help="... within the last this many generated tokens (0 = all; default %(default)s)")
    parser.add_argument("--whole", action="store_true",
                        help="strip models: stretch the whole image to the strip instead of cutting it into lines and words")
    parser.add_argument("--decoder", default=None, choices=DECODERS,
                        help="joint (beam search over the GPT scored with the CTC head) | gpt | ctc (the head alone); "
                             "default: joint for a model with a CTC head reading strips, else gpt")
    parser.add_argument("--device", default="", help="cuda | mps | cpu (default: autodetect)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max_tokens must be >= 1")
    if not 10 <= args.dpi <= 1200:
        parser.error("--dpi must be between 10 and 1200")
    if args.jsonl and args.format not in (None, "jsonl"):
        parser.error(f"--jsonl writes JSON lines; it cannot be combined with --format {args.format} (use --out)")
    if args.jsonl and args.out:
        parser.error("give --jsonl OUT or --out OUT, not both")
    if args.paths.count(STDIN) > 1:
        parser.error("stdin (-) can be read once")
    if args.format in ("hocr", "pdf") and STDIN in args.paths and not args.out:
        parser.error(f"--format {args.format} on stdin (-) needs --out FILE: there is no document to write beside")
    return args


def document_path(path, fmt):
    """Where a document's own hocr / pdf output goes: beside it, its extension replaced."""
    stem = os.path.splitext(path)[0]
    return stem + (".hocr" if fmt == "hocr" else ".ocr.pdf")


def jsonl_record(out):
    """A reader record -> the JSON line `read` writes."""
    if "error" in out:
        rec = {"image": out["image"], "error": out["error"]}
        if out.get("page") is not None:
            rec["page"] = out["page"]
        return rec
    rec = {"image": out["image"], "page": out["page"], "text": out["text"], "lines": out["lines"],
           "tokens": out["num_tokens"], "seconds": round(out["seconds"], 4)}
    if out["views"] != 1:
        rec["strips"] = out["views"]
    if out["finish_reason"] == "length":
        rec["truncated"] = True
    return rec


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _, model, tokenizer, meta, device_type = reader.open_model(args.model, args.device)
        mode = resolve_mode(model.encoder.config, meta, args.mode)
        if args.decoder:
            check_decoder(model, mode, args.decoder)
    except reader.MODEL_ERRORS as e:  # resolve_mode's and check_decoder's are ValueErrors
        print(f"nanoocr read: {e}", file=sys.stderr)
        return 2

    skipped = {}
    items = collect_images(args.paths, skipped)
    report_skipped(skipped)
    fmt = args.format or ("jsonl" if args.jsonl or len(items) != 1 else "text")
    names = ["<stdin>" if p == STDIN else display_name(p) for p, _ in items]
    out_path = args.jsonl or args.out
    sink = None
    if fmt == "jsonl" and out_path:
        # a rerun continues: inputs OUT already holds a text for are skipped, new lines are appended
        done, partial = already_read(out_path)
        todo = [k for k, name in enumerate(names) if name not in done]
        if len(todo) < len(items):
            print(f"nanoocr read: {out_path} already holds {len(items) - len(todo)} of these images; reading the "
                  f"other {len(todo)} (delete it to read everything again)", file=sys.stderr)
        items, names = [items[k] for k in todo], [names[k] for k in todo]
        sink = open(out_path, "a", encoding="utf-8")
        if partial:
            sink.write("\n")  # the killed run's half line stays alone on its line instead of gluing to ours
    elif fmt in ("text", "jsonl"):
        sink = open(out_path, "w", encoding="utf-8") if out_path else sys.stdout
    inputs = [sys.stdin.buffer.read() if p == STDIN else p for p, _ in items]
    n_failed = n_done = 0
    t_start = time.time()
    document, pages_kept = [], []  # hocr / pdf: the current document's pages; everything with --out
    written = []

    def flush_document():
        """hocr / pdf, one file per document: write the pages of the document just finished."""
        if document and not args.out:
            dest = document_path(document[0]["image"], fmt)
            (write_hocr if fmt == "hocr" else write_pdf)(document, dest)
            written.append(dest)
        document.clear()

    # (an input with an error already, or no regular file -- a FIFO would block -- is never opened: one page)
    total = (sum(1 if err or reader.not_a_regular_file(x) else count_pages(x) for x, (_, err) in zip(inputs, items))
             if len(inputs) < 10_000 else None)
    bar = tqdm(total=total, unit="page", desc="nanoocr read", file=sys.stderr, disable=total is not None and total < 2,
               dynamic_ncols=True)
    first_text = True
    try:
        for out in reader.read_images(model, tokenizer, inputs, mode, args.prompt, names=names,
                                      errors=[err for _, err in items], batch_size=args.batch_size,
                                      max_words=reader.trained_max_words(meta), whole=args.whole,
                                      max_tokens=args.max_tokens, no_repeat_ngram=args.no_repeat_ngram,
                                      no_repeat_window=args.no_repeat_window, dpi=args.dpi, decoder=args.decoder,
                                      keep_pictures=fmt == "pdf",
                                      autocast_dtype=reader.read_autocast_dtype(device_type)):
            bar.update(1)
            n_done += 1
            failed = "error" in out
            n_failed += failed
            if failed and fmt != "jsonl":
                where = f" page {out['page']}" if out.get("page") is not None else ""
                bar.write(f"nanoocr read: {out['image']}{where}: {out['error']}", file=sys.stderr)
            if fmt == "jsonl":
                sink.write(json.dumps(jsonl_record(out), ensure_ascii=False) + "\n")
                sink.flush()
            elif fmt == "text":
                if not failed:
                    if not first_text:
                        sink.write("\f\n")  # a page break between pages, as pdftotext writes one
                    sink.write(out["text"] + "\n")
                    sink.flush()
                    first_text = False
            else:
                if document and document[0]["image"] != out["image"]:
                    flush_document()
                if not failed:
                    (pages_kept if args.out else document).append(out)
        flush_document()
        if fmt in ("hocr", "pdf") and args.out:
            if pages_kept:
                (write_hocr if fmt == "hocr" else write_pdf)(pages_kept, args.out)
                written.append(args.out)
            else:
                print(f"nanoocr read: no page could be read; {args.out} not written", file=sys.stderr)
    finally:
        bar.close()
        if sink is not None and sink is not sys.stdout:
            sink.close()
    if len(items) != 1 or n_done != 1 or fmt in ("hocr", "pdf") or out_path:  # not one page on stdout
        where = f" -> {out_path}" if out_path and fmt in ("text", "jsonl") else ""
        if written:
            where = " -> " + ", ".join(written[:3]) + (f" (+{len(written) - 3} more)" if len(written) > 3 else "")
        print(f"read {n_done - n_failed}/{n_done} pages in {time.time() - t_start:.1f}s"
              f"{f' ({n_failed} failed)' if n_failed else ''}{where}", file=sys.stderr)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
