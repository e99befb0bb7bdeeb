"""A synthetic tier-1 (the original project's first milestone, at CPU size): 10 rendered words with
the same prompt, a fixed step budget, 10/10 exact greedy output — and the output must come from the
image: giving each sample another sample's image changes what is read."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO

N_STEPS = 200


@pytest.mark.slow  # ~1-2 minutes on 2 cores
def test_synthetic_tier1_memorises_through_the_image(tmp_path):
    from nanoocr.synth import render
    from nanoocr.synth_text import corpus_iter
    from nanoocr.tokenizer import Tokenizer
    base = tmp_path / "base"
    Tokenizer.train_from_iterator(corpus_iter(max_chars=100_000), vocab_size=300).save(str(base / "tokenizer"))
    records, seen = [], set()
    i = 0
    while len(records) < 10:  # 10 distinct single words in one clean font
        img, prompt, answer = render(7, i, "line", "train", fonts=["DejaVuSans.ttf"], degrade="none", max_words=1,
                                     text_mix={"prose": 1.0})
        i += 1
        if answer in seen or not 2 <= len(answer) <= 8:
            continue
        seen.add(answer)
        path = tmp_path / f"{len(records)}.png"
        img.save(path)
        records.append({"id": str(len(records)), "image": path.name, "prompt": "<image>\nFree OCR.", "answer": answer})
    data = tmp_path / "tier1.json"
    data.write_text(json.dumps(records))
    env = dict(os.environ, NANOOCR_BASE_DIR=str(base), OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "scripts.vis_tok_train", f"--data={data}", "--mode=32x256", "--tag=t1",
           "--gpt_depth=2", "--seq_len=64", "--device_batch_size=10", "--total_batch_size=10",
           f"--num_steps={N_STEPS}", "--warmup_steps=10", "--schedule=constant", "--lr_encoder=1e-3",
           "--lr_projector=1e-3", "--lr_gpt=2e-3", "--encoder_freeze_steps=100", "--encoder_rewarmup=20", "--eval_every=0", "--cer_samples=0", "--save_every=0",
           "--dtype=float32", "--log_every=50", "--final_samples=10", "--final_label=tier-1"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    m = re.search(r"tier-1: (\d+)/10 exact", p.stdout)
    assert m and m.group(1) == "10", p.stdout[-2500:]

    # the same model reading each sample through another sample's image gives other answers
    from nanoocr.checkpoint_manager import load_model
    from nanoocr.engine import generate
    from nanoocr.image_process import load_image, process_image
    model, tok, meta = load_model(str(base / "vis_tok_checkpoints" / "t1"))
    views = torch.stack([process_image(load_image(str(tmp_path / r["image"])), (32, 256), multiple=8)["global_view"]
                         for r in records])
    right = [o["text"] for o in generate(model, tok, views, "Free OCR.", max_tokens=16)]
    rolled = [o["text"] for o in generate(model, tok, views.roll(1, 0), "Free OCR.", max_tokens=16)]
    assert right == [r["answer"] for r in records]
    assert sum(a != b for a, b in zip(right, rolled)) >= 9, (right, rolled)
