"""
The report card of a speedrun: <base>/report/report.md plus PNG plots (train loss, val CER,
image-ablation gap, collapse cosine against step) from the Stage 1 / Stage 2 checkpoints'
histories, the eval metrics, the time of every stage, and sample predictions beside the truth.
Evals named realistic_<row> (tasks/realistic.py; `nanoocr eval --data=realistic:<row>
--out=<base>/eval/realistic_<row>.jsonl`) get one table of their own, with CER per font family.

    python -m scripts.report --tag=cpu
"""

import os
import json

from nanoocr.common import get_base_dir
from nanoocr.configurator import configure
from nanoocr.checkpoint_manager import committed_steps, load_meta, checkpoint_dir_for
from tasks.realistic import ROWS

tag = "cpu"                 # the training tag (speedrun: the preset name)
evals = "lines,pages"       # eval names: <base>/eval/<name>.metrics.json + <name>.jsonl
n_examples = 8              # sample predictions per eval in the report
config = configure(globals())

base = get_base_dir()
out_dir = os.path.join(base, "report")
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
for name in evals.split(","):
    path = os.path.join(base, "eval", f"{name}.metrics.json")
    if not os.path.exists(path):
        lines.append(f"| {name} | — | — | (not run) | | | | |")
        continue
    full = json.load(open(path))
    m = dict(full.get("model", {}), mode=full.get("mode"))  # vision_eval nests the model's metrics
    lines.append(f"| {name} ({m.get('mode')}) | {full.get('data', '')} | {m.get('n')} | {m.get('cer', float('nan')):.4f} | {m.get('wer', float('nan')):.4f} | "
                 f"{m.get('ned', float('nan')):.4f} | {m.get('exact_match', float('nan')):.3f} | {m.get('fox_f1', float('nan')):.3f} |")
    preds = os.path.join(base, "eval", f"{name}.jsonl")
    if os.path.exists(preds):
        recs = [json.loads(l) for l in open(preds)][:n_examples]
        examples.append((name, recs))
lines.append("")
# ---- realistic rows (tasks/realistic.py: the kinds of image users have, one eval per row) ----------------------
real = {}
for row in ROWS:  # in the table's order: each row one step further from the training strips
    path = os.path.join(base, "eval", f"realistic_{row}.metrics.json")
    if os.path.exists(path):
        real[row] = json.load(open(path))
if real:
    nan = float("nan")
    lines += ["## Realistic images", "",
              "tasks/realistic.py: clean and degraded line crops, unseen font families, paragraphs, pages, phone "
              "photos and symbol-heavy scans, test-split text. `ratio` = nanoocr CER / Tesseract CER (below 1: "
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
