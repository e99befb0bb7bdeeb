"""
The original project's sanity check: for a few samples, print EXPECTED next to GENERATED with the
sample's teacher-forced loss (mean over its answer tokens) and its character overlap
(1 - normalised edit distance), then "K/N exact". A low loss with a wrong generation means decoding
is broken; every sample generating the same text means the encoder collapsed (dev/design.md §5).

    nanoocr sample                                                 # the model's val data
    nanoocr sample --data=tier1 --limit=10
    python -m scripts.vision_sample --model=exported/cpu --data=synth --limit=5
"""

import sys

import torch

from nanoocr import modes, reader
from nanoocr.configurator import configure
from nanoocr.engine import encode, preprocess
from nanoocr.metrics import cer, normalized_edit_distance
from nanoocr.tokenizer import ocr_conversation
from tasks.sources import load_pil, open_samples, sample_prompt

# (config keys are this module's plain values: import modules and functions above, never constants)

# -----------------------------------------------------------------------------
# config (override with --key=value)
model = ""              # checkpoint or export directory ("" = the newest trained model)
step = -1               # checkpoint step (-1 = the last)
data = ""               # --data grammar (tasks/sources.py), as vision_eval ("" = the model's val data)
source = ""             # json | jsonl | folder | parquet | fox | omnidocbench ("" = detect)
image_dir = ""          # fox / omnidocbench image folder ("" = the format's default)
split = "val"           # renderer split for data=synth
limit = 10              # samples to show (at most this many of each --data item, then this many in all)
mode = ""               # resolution mode ("" = the training mode)
prompt = ""             # instruction after the image ("" = each sample's own)
max_tokens = -1         # most answer tokens (-1 = the model's training sequence length)
batch_size = 8
device_type = ""
# -----------------------------------------------------------------------------


@torch.inference_mode()
def answer_loss(net, tokenizer, processed, prompt_text, answer):
    """Teacher-forced cross-entropy over the answer tokens and <|assistant_end|> (the training
    loss of this one sample, dev/design.md §3), truncated to the training sequence length as the
    dataloader truncates; None when not one answer token fits."""
    embeds = encode(net, [processed])
    ids, mask = tokenizer.render_conversation(ocr_conversation(prompt_text, answer), embeds[0].size(0),
                                              max_tokens=net.gpt.config.sequence_len + 1)
    if not any(mask[1:]):
        return None
    device = net.get_device()
    x = torch.tensor(ids[:-1], device=device)[None]
    y = torch.tensor([t if m else -1 for t, m in zip(ids[1:], mask[1:])], device=device)[None]
    return float(net(x, targets=y, image_embeds=embeds))


def main():
    model_dir, net, tokenizer, meta, _ = reader.open_model(model, device_type, None if step < 0 else step)
    run_mode = modes.resolve_mode(net.encoder.config, meta, mode)
    samples, desc = open_samples(data, source, image_dir, split, limit, meta.get("user_config"),
                                 run_mode if isinstance(run_mode, tuple) else None)
    samples = samples[:limit] if limit > 0 else samples
    n_tokens = max_tokens if max_tokens > 0 else reader.default_max_tokens(net)
    print(f"model {model_dir} (step {meta.get('step')}), mode {run_mode}, {len(samples)} samples from {desc}")
    # the sanity check shows the model as trained: no repetition guard
    records = reader.run_model(net, tokenizer, samples, run_mode, [sample_prompt(s, prompt) for s in samples],
                               n_tokens, batch_size)
    exact, losses, overlaps, preds, refs = 0, [], [], [], []
    for k, (s, r) in enumerate(zip(samples, records)):
        print(f"--- [{k + 1}/{len(samples)}] {r.get('id') or r['image']}")
        if "error" in r:
            print(f"ERROR: {r['error']}")
            continue
        loss = answer_loss(net, tokenizer, preprocess(net, load_pil(s), run_mode), sample_prompt(s, prompt), s["answer"])
        overlap = 1.0 - normalized_edit_distance(r["pred"], r["ref"])
        hit = r["pred"].strip() == r["ref"].strip()
        exact += hit
        if loss is not None:
            losses.append(loss)
        overlaps.append(overlap)
        preds.append(r["pred"])
        refs.append(r["ref"])
        loss_text = "n/a (answer beyond the sequence length)" if loss is None else f"{loss:.4f}"
        print(f"loss {loss_text} | overlap {overlap:.1%} | {r['tokens']} tokens{' | EXACT' if hit else ''}")
        print(f"EXPECTED:  {r['ref']!r}")
        print(f"GENERATED: {r['pred']!r}")
    if preds:
        mean_loss = f"{sum(losses) / len(losses):.4f}" if losses else "n/a"
        print(f"=== {exact}/{len(preds)} exact | mean loss {mean_loss} | "
              f"mean overlap {sum(overlaps) / len(overlaps):.1%} | CER {cer(preds, refs):.4f} | "
              f"{len(set(preds))} distinct outputs")
    return 0


if __name__ == "__main__":
    config = configure(globals())
    sys.exit(main())
