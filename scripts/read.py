"""
Read text out of images with a trained model.

    nanoocr read page.png                          # one image: its text on stdout
    nanoocr read scans/ more/*.jpg --jsonl out.jsonl
    nanoocr read x.png --model exported/cpu --mode 32x256 --prompt "Free OCR." --max_tokens 200

PATHs are image files, directories (searched recursively for image extensions) and globs. One
image prints its plain text; several print one JSON line per image,
{"image": path, "text": ..., "tokens": n, "seconds": s}, to stdout or --jsonl (a line gets
"truncated": true when --max_tokens cut it, and "confidence" in (0, 1] when the joint or ctc decoder
read it: the weakest strip's, see nanoocr/joint_decode.py). An image that cannot be read yields
{"image": path, "error": ...} and the others continue (so does one that is no regular file, a FIFO,
or on which anything unexpected fails); the exit status is 1 if any failed. Files a directory holds
with other extensions, and hidden files and folders, are skipped and counted on stderr.

--jsonl OUT resumes: a rerun with the same OUT skips the images OUT already holds a text for and
appends the rest (images with an error record are read again); OUT is never truncated. A file name
that is not UTF-8 is written with its odd bytes as \\xNN.
"seconds" is the image's own loading time plus its share of its batch's generation time.

--model: a checkpoint directory or a `nanoocr export` directory; default the newest trained model
under the base dir. --mode: default the mode the model was trained with.

A model trained on fixed HxW strips (the CPU recipe's 32x256 lines) reads an image of exactly that
size as it is; any other image (a long line, a paragraph, a crop of a page) is first cut into lines
and word groups the size the model trained on (nanoocr/strips.py), and the pieces' texts are joined
back into lines. --whole reads the image stretched to the strip instead (the model then sees what
it never trained on). "strips" in a JSON line counts the pieces.
"""

import os
import sys
import glob
import json
import time
import argparse

from nanoocr import reader
from nanoocr.modes import DEFAULT_PROMPT, resolve_mode
from nanoocr.joint_decode import DECODERS, check_decoder
from tasks.common import IMAGE_EXTS
from tasks.image_folder import iter_images


def display_name(path):
    """A path as records and messages name it: a file name that is not UTF-8 (an old Latin-1 disk)
    reaches Python as lone surrogates, which no UTF-8 output can hold; its odd bytes are written
    as \\xNN instead. The same path always gets the same name, so --jsonl resuming matches it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def collect_images(paths, skipped=None):
    """PATH arguments -> ordered, de-duplicated [(path, error or None)]. A named file is taken
    whatever its extension (load_image sniffs the content); directories and globs contribute
    image files by extension (what they leave out is counted in `skipped`, see iter_images). A
    path that matches nothing becomes an error record, and so does one that is not a regular file."""
    out, seen = [], set()

    def add(p, err=None):
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append((p, err))

    for p in paths:
        if os.path.isdir(p):
            for f in iter_images(p, skipped):
                add(f)
        elif os.path.isfile(p):
            add(p)
        elif os.path.exists(p):  # a FIFO or a device: reading it could block the run forever
            add(p, f"not a regular file ({reader.not_a_regular_file(p)}); skipped")
        elif glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            images = [m for m in matches if os.path.isfile(m) and m.lower().endswith(IMAGE_EXTS)]
            for m in matches:
                if os.path.isdir(m):
                    images.extend(iter_images(m, skipped))
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
        prog="nanoocr read", description="Read text out of images.",
        epilog="Options are spelled --key_name, as in `nanoocr eval` / `sample` / `train`; the older "
               "--key-name spellings (--max-tokens, --batch-size, ...) are accepted as aliases until the next release.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories (recursive) or globs")
    parser.add_argument("--model", default=None, help="checkpoint or export directory (default: the newest trained model)")
    parser.add_argument("--mode", default=None,
                        help="tiny | small | base | large | gundam, or HxW for fixed strips (default: the training mode)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the instruction after the image (default: %(default)r)")
    parser.add_argument("--max_tokens", "--max-tokens", type=int, default=None,
                        help="most answer tokens per image (default: the model's training sequence length)")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8,
                        help="images generated together (default: %(default)s)")
    parser.add_argument("--jsonl", default=None, metavar="OUT", help="write the JSON lines to OUT instead of stdout")
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
    return args


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
    single = len(items) == 1 and args.jsonl is None
    names = [display_name(p) for p, _ in items]
    sink = sys.stdout
    if args.jsonl:
        # a rerun continues: images OUT already holds a text for are skipped, new lines are appended
        done, partial = already_read(args.jsonl)
        todo = [k for k, name in enumerate(names) if name not in done]
        if len(todo) < len(items):
            print(f"nanoocr read: {args.jsonl} already holds {len(items) - len(todo)} of these images; reading the "
                  f"other {len(todo)} (delete it to read everything again)", file=sys.stderr)
        items, names = [items[k] for k in todo], [names[k] for k in todo]
        sink = open(args.jsonl, "a", encoding="utf-8")
        if partial:
            sink.write("\n")  # the killed run's half line stays alone on its line instead of gluing to ours
    n_failed = n_done = 0
    t_start = time.time()

    def emit(record):
        nonlocal n_failed, n_done
        n_done += 1
        if "error" in record:
            n_failed += 1
        if single:
            if "error" in record:
                print(f"nanoocr read: {record['image']}: {record['error']}", file=sys.stderr)
            else:
                print(record["text"])
        else:
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()

    paths = [p for p, _ in items]
    try:
        for out in reader.read_images(model, tokenizer, paths, mode, args.prompt, names=names,
                                      errors=[err for _, err in items], batch_size=args.batch_size,
                                      max_words=reader.trained_max_words(meta), whole=args.whole,
                                      max_tokens=args.max_tokens, no_repeat_ngram=args.no_repeat_ngram,
                                      no_repeat_window=args.no_repeat_window, decoder=args.decoder,
                                      autocast_dtype=reader.read_autocast_dtype(device_type)):
            if "error" in out:
                emit(out)
                continue
            rec = {"image": out["image"], "text": out["text"], "tokens": out["num_tokens"],
                   "seconds": round(out["seconds"], 4)}
            if out["views"] != 1:
                rec["strips"] = out["views"]
            if "confidence" in out:  # joint / ctc decoders: the weakest strip's (nanoocr/joint_decode.py)
                rec["confidence"] = out["confidence"]
            if out["finish_reason"] == "length":
                rec["truncated"] = True
            emit(rec)
    finally:
        if sink is not sys.stdout:
            sink.close()
    if not single:
        where = f" -> {args.jsonl}" if args.jsonl else ""
        print(f"read {n_done - n_failed}/{n_done} images in {time.time() - t_start:.1f}s"
              f"{f' ({n_failed} failed)' if n_failed else ''}{where}", file=sys.stderr)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
