"""
Evaluate a model on any dataset a tasks/ reader understands: a predictions JSONL plus the field's
metrics (dev/design.md §6) — CER, WER, mean normalised edit distance, exact match, Fox word-set
precision / recall / F1, and precision and CER per compression-ratio bucket (answer tokens ÷
vision tokens, DeepSeek-OCR's Fox table). Optionally Tesseract on the same images, side by side.

    nanoocr eval --data=tier1
    nanoocr eval --data=fox/en_page_ocr.json --source=fox --image_dir=fox/en_pdf_png --mode=small \\
        --fox_out=fox_preds.json
    nanoocr eval --data=OmniDocBench/OmniDocBench.json --md_dir=omnidoc_md     # per-image .md files
    nanoocr eval --data=synth --limit=64 --tesseract=True                     # the renderer's val split
    nanoocr eval --data=prose                                                 # real prose, unseen fonts
    nanoocr eval --data=realistic:photos --tesseract=True                     # tasks/realistic.py, one row

--data takes the grammar of tasks/sources.py (the README's Data section); a list is evaluated item
after item. --data "" evaluates the model's own validation data (its training config's val_data,
else data; "synth" means the renderer's val split). Images that cannot be read are recorded with their error
and left out of the metrics (counted in "failed").
"""

import contextlib
import json
import os
import subprocess
import sys

import torch

from nanoocr import modes, reader
from nanoocr.common import get_base_dir
from nanoocr.configurator import configure
from nanoocr.joint_decode import check_decoder, default_decoder
from nanoocr.metrics import cer, summarize
from nanoocr.tesseract import run_tesseract, tesseract_available
from tasks import fox, omnidocbench
from tasks.sources import load_pil, open_samples, sample_prompt

# (config keys are this module's plain values: import modules and functions above, never constants,
# or they become --keys)

# -----------------------------------------------------------------------------
# config (override with --key=value)
model = ""              # checkpoint or export directory ("" = the newest trained model)
step = -1               # checkpoint step (-1 = the last)
data = ""               # --data grammar (tasks/sources.py): synth[:KIND], realistic:ROW, prose, tier1, paths; comma-separated ("" = the model's val data)
source = ""             # json | jsonl | folder | parquet | fox | omnidocbench ("" = detect from the path)
image_dir = ""          # fox / omnidocbench: where the images are ("" = the format's default)
split = "val"           # renderer split for data=synth
limit = -1              # evaluate at most this many samples of each --data item (-1: all; synth: 64)
mode = ""               # resolution mode ("" = the mode the model was trained with); several, comma-separated, read every sample in each
prompt = ""             # instruction after the image ("" = each sample's own prompt)
max_tokens = -1         # most answer tokens per image (-1 = the model's training sequence length)
batch_size = 8
whole = False           # strip models: stretch every image to the strip (True) instead of cutting it into lines
no_repeat_ngram = reader.NO_REPEAT_NGRAM    # DeepSeek-OCR's repetition guard (0 = off) ...
no_repeat_window = reader.NO_REPEAT_WINDOW  # ... over this many recent tokens
decoder = ""            # joint | gpt | ctc ("" = the model's default: joint with a CTC head on strips; nanoocr/joint_decode.py)
joint_weight = -1.0     # joint decoding: the CTC term's weight (-1 = joint_decode.WEIGHT) ...
beam = -1               # ... and hypotheses per strip (-1 = joint_decode.BEAM)
out = ""                # predictions JSONL ("" = <base>/eval/<model>-<data>.jsonl); metrics go beside it
fox_out = ""            # also write Fox-style predictions JSON (for Fox's own eval script) here
md_dir = ""             # also write OmniDocBench-style <image stem>.md predictions into this folder
tesseract = False       # also run Tesseract on the same images and print both side by side
tesseract_lang = "eng"
tesseract_psm = -1      # page segmentation mode (-1 = a sample's own "tess_psm", else 7 "single line" for fixed HxW modes, else 3 "auto")
proof = False           # also the reading-not-recalling checks (first mode, first 64 samples): ablation gap, reading another sample's image
device_type = ""        # cuda | mps | cpu ("" = autodetect)
# -----------------------------------------------------------------------------


def tesseract_record(rec, sample, lang="eng", psm=3, sample_psm=False):
    """Adds tesseract_pred / tesseract_seconds to a successfully read record, or tesseract_error when
    Tesseract fails on this image (the model's prediction stays; the comparison leaves it out).
    sample_psm: a sample's own "tess_psm" (7 for a line crop, 6 for a block: tasks/realistic.py)
    wins over psm."""
    if "error" in rec:
        return rec
    try:
        text, seconds = run_tesseract(load_pil(sample), lang, sample.get("tess_psm", psm) if sample_psm else psm)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        rec["tesseract_error"] = f"{type(e).__name__}: {e}"
        return rec
    rec["tesseract_pred"], rec["tesseract_seconds"] = text, seconds
    return rec


def add_tesseract(records, samples, lang="eng", psm=3, sample_psm=False):
    """tesseract_record for every record (records[i] is samples[i], as reader.run_model returns them)."""
    assert len(records) == len(samples), f"{len(records)} records for {len(samples)} samples"
    for rec, sample in zip(records, samples):
        tesseract_record(rec, sample, lang, psm, sample_psm)


def length_checks(records, key="pred"):
    """A model that loops or hallucinates writes far more than the image holds; CER averages that
    away, so report it: the largest len(pred) / len(answer) and how many exceed 1.5x."""
    ratios = [len(r[key]) / max(1, len(r["ref"])) for r in records]
    return {"max_len_ratio": max(ratios), "n_over_1.5x": sum(len(r[key]) > 1.5 * len(r["ref"]) for r in records)}


def per_family(records, key="pred"):
    """{font family: CER} over records that carry a "family" (None when none do)."""
    fams = sorted({r["family"] for r in records if "family" in r})
    if not fams:
        return None
    return {f: cer([r[key] for r in records if r.get("family") == f], [r["ref"] for r in records if r.get("family") == f])
            for f in fams}


def compute_metrics(records):
    """{"model": summary, ["tesseract": summary]} over the successfully read records; each summary
    with length checks and, when records carry a font family, CER per family."""
    ok = [r for r in records if "error" not in r]
    out = {"n": len(records), "failed": len(records) - len(ok)}
    if not ok:
        return out
    out["model"] = summarize(ok)
    out["model"].update(length_checks(ok))
    if per_family(ok):
        out["model"]["per_family"] = per_family(ok)
    out["model"]["seconds_per_image"] = sum(r["seconds"] for r in ok) / len(ok)
    out["model"]["tokens_per_second"] = sum(r["tokens"] for r in ok) / max(1e-9, sum(r["seconds"] for r in ok))
    tess = [r for r in ok if "tesseract_pred" in r]
    if tess:
        # same answer / vision token counts, so tesseract lands in the same compression buckets
        out["tesseract"] = summarize([dict(r, pred=r["tesseract_pred"]) for r in tess])
        out["tesseract"]["seconds_per_image"] = sum(r["tesseract_seconds"] for r in tess) / len(tess)
        out["tesseract"].update(length_checks(tess, "tesseract_pred"))
        if per_family(tess):
            out["tesseract"]["per_family"] = per_family(tess, "tesseract_pred")
    if any("tesseract_error" in r for r in ok):
        out["tesseract_failed"] = sum("tesseract_error" in r for r in ok)
    return out


_ROWS = [("CER", "cer"), ("WER", "wer"), ("edit distance (NED)", "ned"), ("exact match", "exact_match"),
        ("Fox precision", "fox_precision"), ("Fox recall", "fox_recall"), ("Fox F1", "fox_f1"),
        ("compression (x)", "mean_compression"), ("seconds / image", "seconds_per_image"),
        ("max len ratio", "max_len_ratio")]


def format_report(metrics):
    """The metrics as a text table: one column per system, then the compression buckets."""
    systems = [k for k in ("model", "tesseract") if k in metrics]
    if not systems:
        return f"no image could be read ({metrics['failed']} failed)"
    names = {"model": "nanoocr", "tesseract": "tesseract"}
    lines = [f"{'':<22}" + "".join(f"{names[s]:>12}" for s in systems)]
    lines.append(f"{'images':<22}" + "".join(f"{metrics[s]['n']:>12d}" for s in systems))
    for label, key in _ROWS:
        if all(key in metrics[s] for s in systems):
            lines.append(f"{label:<22}" + "".join(f"{metrics[s][key]:>12.4f}" for s in systems))
    if all("n_over_1.5x" in metrics[s] for s in systems):
        lines.append(f"{'#pred > 1.5x answer':<22}" + "".join(f"{metrics[s]['n_over_1.5x']:>12d}" for s in systems))
    if metrics["failed"]:
        lines.append(f"(+{metrics['failed']} unreadable images, left out)")
    if metrics.get("tesseract_failed"):
        lines.append(f"(tesseract failed on {metrics['tesseract_failed']} images: its column leaves them out)")
    fams = metrics["model"].get("per_family")
    if fams:
        lines.append("")
        lines.append(f"{'CER per family':<22}" + "".join(f"{names[s]:>12}" for s in systems))
        for f in fams:
            lines.append(f"{f:<22}" + "".join(f"{metrics[s]['per_family'][f]:>12.4f}" for s in systems))
    buckets = metrics["model"].get("compression_buckets")
    if buckets:
        lines.append("")
        head = f"{'compression':<14}{'n':>5}{'ratio':>8}{'precision':>11}{'CER':>9}"
        if "tesseract" in systems:
            head += f"{'tess prec':>11}{'tess CER':>10}"
        lines.append(head)
        tess = {b["bucket"]: b for b in metrics.get("tesseract", {}).get("compression_buckets", [])}
        for b in buckets:
            line = f"{b['bucket']:<14}{b['n']:>5d}{b['mean_ratio']:>8.2f}{b['precision']:>11.4f}{b['cer']:>9.4f}"
            if "tesseract" in systems:
                t = tess[b["bucket"]]
                line += f"{t['precision']:>11.4f}{t['cer']:>10.4f}"
            lines.append(line)
    return "\n".join(lines)


def default_out_path(model_dir, data_desc):
    """<base>/eval/<parent>_<model>-<data>.jsonl: the parent folder is part of the name, since
    vis_tok_checkpoints/cpu and vis_mid_checkpoints/cpu must not write the same file."""
    clean = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s).strip("_")[:60]
    parts = os.path.normpath(os.path.abspath(model_dir)).split(os.sep)[-2:]
    name = f"{clean('_'.join(parts))}-{clean(data_desc.split(' ')[0].replace(os.sep, '_'))}"
    return os.path.join(get_base_dir(), "eval", name + ".jsonl")


def decode_overrides():
    """--joint_weight / --beam where given (they only exist for the joint decoder)."""
    out = {}
    if joint_weight >= 0:
        out["weight"] = joint_weight
    if beam > 0:
        out["beam"] = beam
    if out and decoder not in ("", "joint"):
        raise SystemExit(f"vision_eval: --joint_weight / --beam tune the joint decoder, not --decoder={decoder}")
    return out


def proof_checks(read, net, tokenizer, samples, records, run_mode, device, n=64):
    """Reading, not recalling, on the first n samples that were read: the image-ablation gap (answer
    loss per token with each sample's own image against another's: diagnostics.loss_and_gap, a cyclic
    shift) and every sample read again from the NEXT sample's image, scored against its own text: a
    model that reads gets much worse, one that recalls a caption does not. read(samples) -> records."""
    from nanoocr.diagnostics import loss_and_gap
    from nanoocr.vision_dataloader import collate, prepare_vision
    ok = [(s, r) for s, r in zip(samples, records) if "error" not in r][:n]
    assert len(ok) >= 2, f"--proof needs at least 2 readable samples, got {len(ok)}"
    seq_len = net.gpt.config.sequence_len
    ex = [prepare_vision(s, tokenizer, net.encoder.config, run_mode) for s, _ in ok]
    for e in ex:  # an answer longer than the model's sequence: the loss over the part it could write
        e["ids"], e["mask"] = e["ids"][:seq_len + 1], e["mask"][:seq_len + 1]
    batches = []
    for i in range(0, len(ex), 8):
        if len(ex) - i < 2:  # (the gap rolls images within a batch: a batch of one has no other image)
            break
        b = collate(ex[i:i + 8], seq_len, tokenizer.bos_id)
        for k in ("input_ids", "targets"):
            b[k] = b[k].to(device)
        b["images"] = b["images"].to(device) if torch.is_tensor(b["images"]) else b["images"]
        batches.append(b)
    with torch.no_grad():
        loss, gap = loss_and_gap(net, batches, contextlib.nullcontext())
    shifted = [dict(s, image=ok[(i + 1) % len(ok)][0]["image"]) for i, (s, _) in enumerate(ok)]
    other = read(shifted)
    own_cer = [cer([r["pred"]], [r["ref"]]) for _, r in ok]
    other_cer = [cer([o["pred"]], [r["ref"]]) if "error" not in o else 1.0 for o, (_, r) in zip(other, ok)]
    return {"n": len(ok), "loss_pages": sum(b["input_ids"].size(0) for b in batches), "answer_loss": loss, "ablation_gap": gap,
            "cer_own_image": cer([r["pred"] for _, r in ok], [r["ref"] for _, r in ok]),
            "cer_other_image": cer([o.get("pred", "") for o in other], [r["ref"] for _, r in ok]),
            "worse_with_other_image": sum(b > a for a, b in zip(own_cer, other_cer)),
            "distinct_outputs": len({r["pred"] for _, r in ok})}


def format_compression(by_mode):
    """The compression table of several modes: one block of buckets per mode."""
    lines = [f"{'mode':<7}{'compression':<14}{'n':>5}{'ratio':>8}{'precision':>11}{'CER':>9}"]
    for name, m in by_mode.items():
        for b in (m.get("model") or {}).get("compression_buckets", []):
            lines.append(f"{name:<7}{b['bucket']:<14}{b['n']:>5d}{b['mean_ratio']:>8.2f}{b['precision']:>11.4f}{b['cer']:>9.4f}")
    return "\n".join(lines)


def mode_name(run_mode):
    return "x".join(map(str, run_mode)) if isinstance(run_mode, tuple) else run_mode


def main():
    if tesseract and not tesseract_available():
        print("vision_eval: --tesseract=True but no `tesseract` on PATH "
              "(Debian/Ubuntu: apt-get install tesseract-ocr tesseract-ocr-eng)", file=sys.stderr)
        return 2
    try:
        model_dir, net, tokenizer, meta, dev = reader.open_model(model, device_type, None if step < 0 else step)
        # --mode=base,tiny reads every sample in each mode in turn (the compression table's rows)
        run_modes = [modes.resolve_mode(net.encoder.config, meta, m) for m in (modes.train_modes(mode) or [None])]
    except (ValueError, *reader.MODEL_ERRORS) as e:  # no model, a broken one, one that would run code, a bad mode
        print(f"nanoocr eval: {e}", file=sys.stderr)
        return 2
    samples, desc = open_samples(data, source, image_dir, split, limit, meta.get("user_config"),
                                 run_modes[0] if isinstance(run_modes[0], tuple) else None)
    n_tokens = max_tokens if max_tokens > 0 else reader.default_max_tokens(net)
    print(f"model {model_dir} (step {meta.get('step')}), mode {', '.join(map(mode_name, run_modes))}, "
          f"{len(samples)} samples from {desc}", flush=True)

    if decoder:
        try:
            for run_mode in run_modes:
                check_decoder(net, run_mode, decoder)
        except ValueError as e:
            print(f"vision_eval: {e}", file=sys.stderr)
            return 2
    out_path = out or default_out_path(model_dir, desc)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    stem = os.path.splitext(out_path)[0]

    def read(items, run_mode):
        return reader.iter_records(net, tokenizer, items, run_mode, [sample_prompt(s, prompt) for s in items], n_tokens,
                                   batch_size, no_repeat_ngram, no_repeat_window, reader.read_autocast_dtype(dev),
                                   reader.trained_max_words(meta), whole, decoder or None, **decode_overrides())

    by_mode = {}
    for run_mode in run_modes:
        name = mode_name(run_mode)
        path = out_path if len(run_modes) == 1 else f"{stem}.{name}.jsonl"
        psm = tesseract_psm if tesseract_psm >= 0 else (7 if isinstance(run_mode, tuple) else 3)
        records = []
        # each record is written (and flushed) as soon as it is complete, Tesseract's column included: a
        # run that dies or is killed keeps every prediction made before
        with open(path, "w", encoding="utf-8") as f:
            for sample, r in zip(samples, read(samples, run_mode)):
                if "error" in r:
                    print(f"unreadable: {r['image']}: {r['error']}", file=sys.stderr)
                elif tesseract:
                    tesseract_record(r, sample, tesseract_lang, psm, sample_psm=tesseract_psm < 0)
                    if "tesseract_error" in r:
                        print(f"tesseract failed on {r['image']}: {r['tesseract_error']}", file=sys.stderr)
                r["mode"] = name
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                f.flush()
                records.append(r)
        metrics = compute_metrics(records)
        metrics.update(model_dir=model_dir, step=meta.get("step"), data=desc,
                       mode=list(run_mode) if isinstance(run_mode, tuple) else run_mode,
                       decoder=decoder or default_decoder(net, run_mode), **decode_overrides())
        if proof and run_mode == run_modes[0]:
            metrics["proof"] = proof_checks(lambda items: list(read(items, run_mode)), net, tokenizer, samples,
                                            records, run_mode, dev)
        by_mode[name] = metrics
        if run_mode == run_modes[0]:
            first_records = records
        if len(run_modes) > 1:
            with open(f"{stem}.{name}.metrics.json", "w") as f:
                json.dump(metrics, f, indent=2)
            print(f"--- mode {name}\n{format_report(metrics)}", flush=True)

    if len(run_modes) == 1:
        metrics = by_mode[mode_name(run_modes[0])]
    else:  # one file for the report card: every mode's metrics, the proof beside the first's
        metrics = {"model_dir": model_dir, "step": meta.get("step"), "data": desc, "modes": list(by_mode),
                   "by_mode": by_mode, "n": len(samples)}
        if proof:
            metrics["proof"] = by_mode[mode_name(run_modes[0])]["proof"]
    metrics_path = stem + ".metrics.json"
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2)

    # benchmark-format outputs (of the first mode), for the benchmarks' own evaluators
    ok = [(s, r["pred"]) for s, r in zip(samples, first_records) if "error" not in r]
    if fox_out and ok:
        fox.write_predictions(fox_out, [s for s, _ in ok], [p for _, p in ok])
        print(f"Fox predictions -> {fox_out}")
    if md_dir and ok:
        omnidocbench.write_predictions(md_dir, [s for s, _ in ok], [p for _, p in ok])
        print(f"OmniDocBench markdown ({len(ok)} files) -> {md_dir}")

    if len(run_modes) == 1:
        print(format_report(metrics))
    else:
        print(format_compression(by_mode))
    if "proof" in metrics:
        p = metrics["proof"]
        print(f"reading, not recalling ({p['n']} samples, mode {mode_name(run_modes[0])}): distinct outputs "
              f"{p['distinct_outputs']}/{p['n']}, image-ablation gap {p['ablation_gap']:.3f} nats/token, CER "
              f"{p['cer_own_image']:.4f} from its own image vs {p['cer_other_image']:.4f} from another's "
              f"({p['worse_with_other_image']}/{p['n']} worse)")
    print(f"predictions -> {out_path if len(run_modes) == 1 else stem + '.<mode>.jsonl'}\nmetrics -> {metrics_path}")
    return 0


if __name__ == "__main__":
    config = configure(globals())
    sys.exit(main())
