"""The CPU page recipe's path end to end at CI size (presets/pages_cpu.toml): the cpu_page DeepEncoder
(two stride-2 convs, 32 px per vision token), two named modes drawn per batch, the cell CTC loss fed
by the renderer's glyph boxes, then `nanoocr eval` on test-split pages in both modes with --proof and
the report card's compression section. What it checks is the plumbing, with numbers that must come
out exactly (token counts, buckets that add up, a loss that falls); that the recipe READS pages is
not shown yet -- at this size and budget it does not (dev/LOG.md "Page recipe"), so no reading bound
is claimed here."""
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

N_STEPS = 40


@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
def test_page_recipe_path_trains_evaluates_and_reports(tmp_path):
    from nanoocr.synth_text import corpus_iter
    from nanoocr.tokenizer import Tokenizer
    Tokenizer.train_from_iterator(corpus_iter(max_chars=100_000), vocab_size=512).save(str(tmp_path / "tokenizer"))
    env = dict(os.environ, NANOOCR_BASE_DIR=str(tmp_path), OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "scripts.vis_tok_train", "--preset=pages_cpu", "--tag=ci", "--mode=base,small",
           "--synth_kinds=line_page", "--synth_fonts=DejaVuSans.ttf", "--synth_degrade=none", "--synth_max_words=2",
           "--easy_steps=0", "--gpt_depth=1", "--seq_len=96", "--device_batch_size=4", "--total_batch_size=4",
           "--num_workers=0", f"--num_steps={N_STEPS}", "--warmup_steps=5", "--eval_every=0", "--cer_samples=2",
           "--max_new_tokens=8", "--save_every=0", "--log_every=10", "--seed=3", "--time_limit_min=0", "--dtype=float32"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "mode base,small" in p.stdout, p.stdout[-2000:]
    ctc = [float(m) for m in re.findall(r"\| ctc ([0-9.]+) \|", p.stdout)]
    assert len(ctc) == N_STEPS // 10 and ctc[-1] < 0.75 * ctc[0], f"the cell CTC loss must fall (the blanks are learnt first): {ctc}"

    model_dir = tmp_path / "vis_tok_checkpoints" / "ci"
    meta = json.loads(sorted(model_dir.glob("meta_*.json"))[-1].read_text())
    assert meta["model_config"]["ctc"] == {"features": "cells", "decoder": "gpt"}
    assert meta["model_config"]["encoder"]["conv_channels"] == [128, 128]
    ev = subprocess.run([sys.executable, "-m", "scripts.vision_eval", f"--model={model_dir}", "--data=synth:block",
                         "--split=test", "--limit=6", "--mode=base,small", "--proof=True", "--max_tokens=8",
                         "--device_type=cpu", f"--out={tmp_path / 'eval' / 'pages.jsonl'}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    assert "reading, not recalling (6 samples, mode base)" in ev.stdout, ev.stdout[-2000:]
    metrics = json.loads((tmp_path / "eval" / "pages.metrics.json").read_text())
    assert metrics["modes"] == ["base", "small"] and metrics["n"] == 6
    tok = Tokenizer.from_directory(str(tmp_path / "tokenizer"))
    for mode, vision_tokens in (("base", 64), ("small", 25)):
        m = metrics["by_mode"][mode]["model"]
        recs = [json.loads(line) for line in (tmp_path / "eval" / f"pages.{mode}.jsonl").read_text().splitlines()]
        assert len(recs) == 6 and all(r["vision_tokens"] == vision_tokens and r["mode"] == mode for r in recs)
        assert all(r["answer_tokens"] == len(tok.encode(r["ref"])) for r in recs)
        buckets = m["compression_buckets"]
        assert sum(b["n"] for b in buckets) == 6, buckets
        ratios = sorted(r["answer_tokens"] / vision_tokens for r in recs)
        assert sum(b["mean_ratio"] * b["n"] for b in buckets) == pytest.approx(sum(ratios))
        assert 1 <= m["distinct_outputs"] <= 6
    proof = metrics["proof"]
    assert proof["n"] == 6 and proof["loss_pages"] == 6 and 0.0 <= proof["worse_with_other_image"] <= 6
    assert proof["answer_loss"] > 0 and abs(proof["ablation_gap"]) < 50 and 0.0 <= proof["cer_other_image"]

    rep = subprocess.run([sys.executable, "-m", "scripts.report", "--tag=ci", "--evals=pages",
                          f"--eval_dir={tmp_path / 'eval'}", f"--out={tmp_path / 'report'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    card = (tmp_path / "report" / "report.md").read_text()
    assert "## Optical compression: pages" in card and "| base |" in card and "| small |" in card
    assert (tmp_path / "report" / "compression_pages.png").stat().st_size > 5000
