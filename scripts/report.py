"""
The report card of a speedrun: <base>/report/report.md plus PNG plots (train loss, val CER,
image-ablation gap, collapse cosine against step) from the Stage 1 / Stage 2 checkpoints'
histories, the eval metrics, the time of every stage, and sample predictions beside the truth.
Evals named realistic_<row> (tasks/realistic.py; `nanoocr eval --data=realistic:<row>
--out=<base>/eval/realistic_<row>.jsonl`) get one table of their own, with CER per font family.

    python -m scripts.report --tag=cpu
"""

import glob
import json
import os
import re

from nanoocr.checkpoint_manager import checkpoint_dir_for, committed_steps, load_meta
from nanoocr.common import get_base_dir
from nanoocr.configurator import configure
from tasks.realistic import ROWS

tag = "cpu"                 # the training tag (speedrun: the preset name)
evals = "lines,pages"       # eval names: <eval_dir>/<name>.metrics.json + <name>.jsonl ("" = none)
eval_dir = ""               # where the evals are ("" = <base>/eval); scaling/ inside it: the scaling curve
out = ""                    # the report's folder ("" = <base>/report)
n_examples = 8              # sample predictions per eval in the report
config = configure(globals())

base = get_base_dir()
eval_dir = eval_dir or os.path.join(base, "eval")
out_dir = out or os.path.join(base, "report")
os.makedirs(out_dir, exist_ok=True)


def stage_meta(phase):
    d = checkpoint_dir_for(phase, tag, base)
    steps = committed_steps(d) if os.path.isdir(d) else []
    return load_meta(d, steps[-1]) if steps else None


stages = [(name, stage_meta(phase)) for name, phase in (("Stage 1", "vis_tok"), ("Stage 2", "vis_mid"))]
stages = [(n, m) for n, m in stages if m is not None]


def plot(path, key, ylabel, from_history=True, log=False):
    """One line per stage (Stage 2's steps continue after Stage 1's)."""
    import matplotlib  # here, not at the top: heavy, and only needed when there is something to plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4))
    offset, drawn = 0, False
    for name, meta in stages:
        if from_history:
            pts = [(h["step"] + offset, h[key]) for h in meta.get("history", []) if h.get(key) is not None]
        else:
            pts = [(s + offset, v) for s, v in meta["loop"]["losses"]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if from_history else None,
                    markersize=3, label=name)
            drawn = True
        offset += meta["step"]
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


lines = [f"# nanoocr report card — `{tag}`", ""]
# ---- timing --------------------------------------------------------------------------------------
times_path = os.path.join(base, "speedrun_times.tsv")
if os.path.exists(times_path):
    seconds = {}  # a resumed speedrun logs a stage once per run: add them up
    for l in open(times_path):
        if l.strip():
            name, sec = l.rstrip("\n").split("\t")
            seconds[name] = seconds.get(name, 0) + int(sec)
    total = sum(seconds.values())
    lines += ["## Time per stage", "", "| stage | minutes |", "|---|---|"]
    lines += [f"| {name} | {sec / 60:.1f} |" for name, sec in seconds.items()]
    lines += [f"| **total** | **{total / 60:.1f}** |", ""]
# ---- metrics ---------------------------------------------------------------------------------------------
lines += ["## Results", "",
          "Every sample unseen in training. `lines`: the renderer's test split (the training distribution); "
          "`prose`: real book passages in font families the CPU recipe never draws (tasks/prose.py), "
          "read as `nanoocr read` reads them (cut into lines and word groups).", "",
          "| eval | data | n | CER | WER | norm. edit dist. | exact | word F1 (Fox) |", "|---|---|---|---|---|---|---|---|"]
examples = []
compression = {}  # eval name -> its metrics, for evals read in several modes
for name in filter(None, evals.split(",")):
    path = os.path.join(eval_dir, f"{name}.metrics.json")
    if not os.path.exists(path):
        lines.append(f"| {name} | — | — | (not run) | | | | |")
        continue
    full = json.load(open(path))
    if "by_mode" in full:  # read in several modes (--mode=base,tiny): a row each, and the compression section
        compression[name] = full
    for mode_full in (full.get("by_mode") or {"": full}).values():
        m = dict(mode_full.get("model", {}), mode=mode_full.get("mode"))  # vision_eval nests the model's metrics
        lines.append(f"| {name} ({m.get('mode')}) | {full.get('data', '')} | {m.get('n')} | {m.get('cer', float('nan')):.4f} | {m.get('wer', float('nan')):.4f} | "
                     f"{m.get('ned', float('nan')):.4f} | {m.get('exact_match', float('nan')):.3f} | {m.get('fox_f1', float('nan')):.3f} |")
    preds = os.path.join(eval_dir, f"{name}.jsonl" if "by_mode" not in full else f"{name}.{full['modes'][0]}.jsonl")
    if os.path.exists(preds):
        recs = [json.loads(l) for l in open(preds)][:n_examples]
        examples.append((name, recs))
lines.append("")
# ---- realistic rows (tasks/realistic.py: the kinds of image users have, one eval per row) ----------------------
real = {}
for row in ROWS:  # in the table's order: each row one step further from the training strips
    path = os.path.join(eval_dir, f"realistic_{row}.metrics.json")
    if os.path.exists(path):
        real[row] = json.load(open(path))
if real:
    nan = float("nan")
    lines += ["## Realistic images", "",
              "tasks/realistic.py: clean and degraded line crops, unseen font families, paragraphs, pages, phone "
              "photos and symbol-heavy scans; then what scanners produce: 1-bit lines and pages, 1-bit TIFF and "
              "fax G4 TIFF files, greyscale scans, colour scans on tinted paper, pencil-grey lines; then layouts: "
              "pages in 2 and 3 columns, pages turned by 90/180/270 degrees; test-split "
              "text. `ratio` = nanoocr CER / Tesseract CER (below 1: "
              "nanoocr reads better); `max len ratio` = the longest prediction over its answer, `#>1.5x` = images "
              "whose prediction is over 1.5x the answer (loops, hallucination).", "",
              "| row | n | nanoocr CER | tesseract CER | ratio | max len ratio | #>1.5x |", "|---|---|---|---|---|---|---|"]
    for row, full in real.items():
        m, t = full.get("model", {}), full.get("tesseract")
        tcer = f"{t['cer']:.4f}" if t else "—"
        ratio = f"{m.get('cer', nan) / t['cer']:.2f}" if t and t.get("cer") else "—"
        lines.append(f"| {row} | {m.get('n', full.get('n'))} | {m.get('cer', nan):.4f} | {tcer} | {ratio} | "
                     f"{m.get('max_len_ratio', nan):.2f} | {m.get('n_over_1.5x', '—')} |")
    lines.append("")
    fams = sorted({f for full in real.values() for f in full.get("model", {}).get("per_family", {})})
    if fams:
        rows = list(real)
        lines += ["nanoocr CER per font family (— : the row has no image in that family):", "",
                  "| family | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
        for f in fams:
            cells = [real[r].get("model", {}).get("per_family", {}).get(f) for r in rows]
            lines.append(f"| {f} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
        lines.append("")
# ---- scaling: Stage 1 checkpoints along one long run on every realistic row (runs/cpu_long.sh) -------------
# files <eval_dir>/scaling/s<step>_<row>[_<decoder>].metrics.json; the decoder is the one the metrics name
scaling = {}  # (row, decoder) -> {step: CER}
tess_level = {}  # row -> Tesseract's CER (from whichever step ran it)
for path in glob.glob(os.path.join(eval_dir, "scaling", "s*_*.metrics.json")):
    m = re.fullmatch(r"s(\d+)_(\w+?)(_gpt|_ctc|_joint)?\.metrics\.json", os.path.basename(path))
    if m and m.group(2) in ROWS:
        full = json.load(open(path))
        decoder = full.get("decoder") or (m.group(3) or "_gpt")[1:]  # evals from before --decoder read with the GPT
        scaling.setdefault((m.group(2), decoder), {})[int(m.group(1))] = full["model"]["cer"]
        if full.get("tesseract"):
            tess_level[m.group(2)] = full["tesseract"]["cer"]
stage1 = dict(stages).get("Stage 1")
if scaling and stage1:
    minutes = {h["step"]: h["minutes"] for h in stage1.get("history", []) if "minutes" in h}
    steps = sorted({st for per in scaling.values() for st in per if st in minutes})
    rows = [r for r in ROWS if any(k[0] == r for k in scaling)]
    decoders = [d for d in ("joint", "gpt", "ctc") if any(k[1] == d for k in scaling)]
    lines += ["## What more training buys", "",
              "One Stage 1 run read as `nanoocr read` reads (per decoder) at checkpoints along the way, every "
              "realistic row; minutes = that run's training wall clock. A checkpoint mid-run has not had its "
              "learning rate decayed, so a shorter recipe that ends at that minute reads somewhat better.", "",
              "| step | minutes | decoder | " + " | ".join(rows) + " |", "|---|---|---|" + "---|" * len(rows)]
    for st in steps:
        for d in decoders:
            cells = [scaling.get((r, d), {}).get(st) for r in rows]
            if any(c is not None for c in cells):
                lines.append(f"| {st} | {minutes[st]:.0f} | {d} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
    lines.append("| Tesseract | | | " + " | ".join(f"{tess_level[r]:.3f}" if r in tess_level else "—" for r in rows) + " |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9.5, 4.6))
    colours = plt.get_cmap("tab20")  # 14+ rows: one colour each, the decoders told apart by line style
    for i, r in enumerate(rows):
        for d, style in zip(decoders, ("-", "--", "-.")):
            per = scaling.get((r, d), {})
            pts = [(minutes[st], per[st]) for st in steps if st in per]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", markersize=3, color=colours(i % 20),
                        label=f"{r} ({d})" if len(decoders) > 1 else r)
        if r in tess_level:
            ax.axhline(tess_level[r], color=colours(i % 20), linestyle=":", linewidth=1)
    ax.set_xlabel("Stage 1 training minutes")
    ax.set_ylabel("CER (dotted: Tesseract)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scaling.png"), dpi=110)
    plt.close(fig)
    lines += ["", "![scaling.png](scaling.png)", ""]
# ---- optical compression: precision against answer tokens / vision tokens, per mode --------------------------
# DeepSeek-OCR's published Fox points (its paper, Table 2: English Fox pages of 600-1300 text tokens read
# with 64 and 100 vision tokens; (compression ratio, precision %)): theirs, drawn beside ours for scale.
DEEPSEEK_FOX = {64: [(10.5, 96.5), (11.8, 93.8), (13.2, 83.8), (15.1, 85.9), (16.5, 79.3), (17.7, 76.4), (19.7, 59.1)],
                100: [(6.7, 98.5), (7.5, 97.3), (8.5, 96.8), (9.7, 96.8), (10.6, 91.5), (11.3, 89.8), (12.6, 87.1)]}
for name, full in compression.items():
    lines += [f"## Optical compression: {name}", "",
              f"{full.get('data', '')}, {full.get('n')} images read in each mode. Compression = answer tokens / "
              "vision tokens (our 512-id tokenizer's counts); precision = Fox's word-set precision; CER over the "
              "bucket's images.", "",
              "| mode | compression | n | mean ratio | precision | CER |", "|---|---|---|---|---|---|"]
    for mode_name, mode_full in full["by_mode"].items():
        for b in mode_full.get("model", {}).get("compression_buckets", []):
            lines.append(f"| {mode_name} | {b['bucket']} | {b['n']} | {b['mean_ratio']:.2f} | {b['precision']:.3f} | {b['cer']:.3f} |")
    if full.get("proof"):
        p = full["proof"]
        lines += ["", f"Reading, not recalling ({p['n']} images, mode {full['modes'][0]}): {p['distinct_outputs']} distinct "
                  f"outputs; image-ablation gap {p['ablation_gap']:.3f} nats/token; CER {p['cer_own_image']:.3f} from each "
                  f"image's own pixels against {p['cer_other_image']:.3f} from the next image's ({p['worse_with_other_image']}/"
                  f"{p['n']} read worse)."]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for mode_name, mode_full in full["by_mode"].items():
        pts = [(b["mean_ratio"], b["precision"]) for b in mode_full.get("model", {}).get("compression_buckets", []) if b["n"] >= 3]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "-o", markersize=4, label=f"nanoocr {mode_name}")
    for n_tok, marker in ((64, "s"), (100, "^")):
        ax.plot([x for x, _ in DEEPSEEK_FOX[n_tok]], [y / 100 for _, y in DEEPSEEK_FOX[n_tok]], ":", marker=marker,
                color="grey", markersize=4, label=f"DeepSeek-OCR, {n_tok} tokens (published, Fox)")
    ax.axhline(0.5, color="black", linewidth=0.6, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (answer tokens / vision tokens)")
    ax.set_ylabel("precision (Fox word set)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"compression_{name}.png"), dpi=110)
    plt.close(fig)
    lines += ["", f"![compression_{name}.png](compression_{name}.png)", ""]
# ---- diagnostics at the end of each stage ---------------------------------------------------------------
lines += ["## Training diagnostics (last eval of each stage)", "",
          "| stage | steps | train loss (EMA) | val loss | ablation gap (nats) | val CER | cos SAM | cos proj |",
          "|---|---|---|---|---|---|---|---|"]
for name, meta in stages:
    h = meta.get("history", [{}])[-1] if meta.get("history") else {}
    fmt = lambda k: f"{h[k]:.4f}" if isinstance(h.get(k), (int, float)) else "—"
    lines.append(f"| {name} | {meta['step']} | {fmt('train_ema_loss')} | {fmt('val_loss')} | {fmt('ablation_gap')} | "
                 f"{fmt('val_cer')} | {fmt('cos_sam')} | {fmt('cos_proj')} |")
lines.append("")
# ---- plots ------------------------------------------------------------------------------------------------
if stages:
    plots = [plot(os.path.join(out_dir, "loss.png"), None, "train loss (nats/token)", from_history=False),
             plot(os.path.join(out_dir, "val_cer.png"), "val_cer", "val CER (greedy)"),
             plot(os.path.join(out_dir, "ablation_gap.png"), "ablation_gap", "image-ablation gap (nats)"),
             plot(os.path.join(out_dir, "collapse.png"), "cos_sam", "mean pairwise cosine (net_3)")]
    lines += ["## Curves", ""] + [f"![{p}]({p})" for p in plots] + [""]
# ---- examples -------------------------------------------------------------------------------------------
for name, recs in examples:
    lines += [f"## Sample predictions: {name}", "", "| image | truth | prediction |", "|---|---|---|"]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", "⏎")
    for r in recs:
        lines.append(f"| {os.path.basename(str(r.get('image', '')))} | {esc(r.get('ref', ''))} | {esc(r.get('pred', r.get('error', '')))} |")
    lines.append("")
# ---- config -----------------------------------------------------------------------------------------------
for name, meta in stages:
    lines += [f"## {name} config", "", "```json", json.dumps(meta.get("user_config", {}), indent=1), "```", ""]
report = os.path.join(out_dir, "report.md")
with open(report, "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines[:40]))
print(f"\nreport -> {report}")
