"""The runs/ recipes dry-run at a tiny size on the CPU: the same scripts and presets, small overrides,
a few steps per stage (the full-size recipe, runs/full.sh; the long CPU recipe, runs/cpu_long.sh)."""
import os
import subprocess
import sys

import pytest
from conftest import REPO

from nanoocr.checkpoint_manager import committed_steps, load_meta

TINY = ["--encoder_size=cpu", "--gpt_depth=1", "--gpt_n_embd=192", "--gpt_n_head=2", "--mode=32x256",
        "--synth_kinds=line", "--seq_len=96", "--num_steps=2", "--device_batch_size=2", "--total_batch_size=2",
        "--eval_every=0", "--cer_samples=0", "--save_every=0", "--num_workers=0", "--dtype=float32", "--log_every=1",
        "--from_scratch=True"]


@pytest.mark.slow  # ~25 s: runs/full.sh, Stage 1 + Stage 2 at a tiny size
def test_full_recipe_dry_run(tmp_path):
    env = dict(os.environ, NANOOCR_BASE_DIR=str(tmp_path), OMP_NUM_THREADS="1", NPROC="1", VOCAB_SIZE="300")
    p = subprocess.run(["bash", "runs/full.sh"] + TINY, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s1 = tmp_path / "vis_tok_checkpoints" / "full"
    s2 = tmp_path / "vis_mid_checkpoints" / "full"
    assert committed_steps(str(s1)) == [2] and committed_steps(str(s2)) == [2]
    meta1, meta2 = load_meta(str(s1), 2), load_meta(str(s2), 2)
    # the presets were applied (and the overrides on top of them)
    assert meta1["user_config"]["preset"] == "full" and meta1["user_config"]["lr_gpt"] == 5e-5
    assert meta2["user_config"]["preset"] == "full_mid" and meta2["user_config"]["freeze_sam"] is True
    assert meta2["user_config"]["text_ratio"] == 0.1 and meta2["stage"] == 2
    assert meta1["model_config"]["gpt"]["n_layer"] == 1


@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
def test_long_cpu_recipe_dry_run(tmp_path):
    """runs/cpu_long.sh at a tiny size: both stages, the finished model on a realistic row, the scaling
    evals of its Stage 1 checkpoints and the report card's CER-against-minutes section and plot."""
    env = dict(os.environ, NANOOCR_BASE_DIR=str(tmp_path), OMP_NUM_THREADS="1", ROWS="clean_lines",
               NANOOCR_VENV=sys.prefix)  # the venv running the tests
    args = ["--num_steps=4", "--save_every=2", "--eval_every=2", "--cer_samples=2", "--eval_batches=1",
            "--device_batch_size=2", "--total_batch_size=2", "--num_workers=0", "--dtype=float32", "--easy_steps=0"]
    p = subprocess.run(["bash", "runs/cpu_long.sh"] + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert committed_steps(str(tmp_path / "vis_tok_checkpoints" / "cpu_long")) == [2, 4]
    meta2 = load_meta(str(tmp_path / "vis_mid_checkpoints" / "cpu_long"), 4)
    assert meta2["user_config"]["preset"] == "cpu_long_mid" and meta2["model_config"]["ctc"]["features"] == "tokens"
    evals = tmp_path / "eval_cpu_long"
    import json
    final = json.loads((evals / "realistic_clean_lines.metrics.json").read_text())
    assert final["decoder"] == "gpt" and final["model"]["n"] == 48  # the long recipe's ctc_decoder
    assert meta2["model_config"]["ctc"]["decoder"] == "gpt"
    for decoder in ("gpt", "joint"):
        assert json.loads((evals / "scaling" / f"s4_clean_lines_{decoder}.metrics.json").read_text())["decoder"] == decoder
    report = (tmp_path / "report_cpu_long" / "report.md").read_text()
    assert "## What more training buys" in report and (tmp_path / "report_cpu_long" / "scaling.png").is_file()
