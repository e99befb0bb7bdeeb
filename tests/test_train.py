"""Training infrastructure: exact resume, DDP == one process, Stage 2 freezing, and a checkpoint
killed mid-save. Each test runs the real script in a subprocess on a tiny configuration."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO

from nanoocr.checkpoint_manager import (
    checkpoint_dir_for,
    committed_steps,
    load_checkpoint,
    load_meta,
)

TINY = ["--gpt_depth=1", "--gpt_n_head=2", "--seq_len=96", "--device_batch_size=4", "--total_batch_size=4",
        "--eval_every=0", "--eval_batches=1", "--cer_samples=0", "--dtype=float32", "--log_every=1",
        "--warmup_steps=2", "--synth_kinds=line"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A base dir with a small tokenizer, shared by this module's runs."""
    base = tmp_path_factory.mktemp("train_base")
    from nanoocr.synth_text import corpus_iter
    from nanoocr.tokenizer import Tokenizer
    Tokenizer.train_from_iterator(corpus_iter(max_chars=200_000), vocab_size=600).save(str(base / "tokenizer"))
    return base


def env_for(base):
    env = dict(os.environ, NANOOCR_BASE_DIR=str(base), OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.pop("NANOOCR_TEST_PAUSE_BEFORE_META", None)
    return env


def run(base, args, module="scripts.vis_tok_train", timeout=300, extra_env=None):
    env = env_for(base)
    env.update(extra_env or {})
    p = subprocess.run([sys.executable, "-m", module] + TINY + args, cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def losses(base, tag, phase="vis_tok"):
    d = checkpoint_dir_for(phase, tag, base)
    return load_meta(d, committed_steps(d)[-1])["loop"]["losses"]


# with the auxiliary CTC head, whose state lives in the checkpoint too; and with Muon for the matrices
# (the plain case stays in the quick loop; the CTC and Muon variants are slow: ~15 s each)
@pytest.mark.parametrize("ctc,matrix_lr", [("0", "0"), pytest.param("1", "0", marks=pytest.mark.slow),
                                           pytest.param("1", "0.02", marks=pytest.mark.slow)])
def test_resume_equals_uninterrupted(base, ctc, matrix_lr):
    args = ["--num_steps=4", "--save_every=0", f"--ctc_weight={ctc}", "--mode=32x128", f"--matrix_lr={matrix_lr}",
            "--muon_encoder=True"]
    tag = f"{ctc}_{matrix_lr}"
    run(base, args + [f"--tag=full{tag}"])
    run(base, args + [f"--tag=split{tag}", "--stop_after=2"])
    assert committed_steps(os.path.join(base, "vis_tok_checkpoints", f"split{tag}")) == [2]
    out = run(base, args + [f"--tag=split{tag}", "--resume=True"])
    assert "resumed from" in out and "step 2" in out
    a, b = losses(base, f"full{tag}"), losses(base, f"split{tag}")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    for (_, x), (_, y) in zip(a, b):
        assert abs(x - y) <= 1e-6, (a, b)
    assert a[0][1] != a[-1][1]  # it trained
    if ctc == "1":
        assert "| ctc " in out
    # MFU says what it divides by (flops.matmul_peak, the bench's measurement too) and how much of the
    # step was spent waiting for data, which the bench's timed steps leave out
    assert re.search(r"MFU denominator: [0-9.]+ [GMT]FLOP/s fp32 \(the best square matmul this cpu has shown, "
                     r"kept in .*matmul_peak.json; [0-9.]+ [GMT]FLOP/s now\)", out), out[-2000:]
    assert re.search(r"mfu [0-9.]+% of [0-9.]+ [GMT]FLOP/s fp32 \| data [0-9]+% of the time \(mfu [0-9.]+% without it\)",
                     out), out[-2000:]
    if matrix_lr != "0":  # Muon's momentum is in the checkpoint (and the resumed run needed it)
        _, optim, _ = load_checkpoint(os.path.join(base, "vis_tok_checkpoints", f"split{tag}"), load_optimizer=True)
        assert optim["muon"]["state"]


def _torchrun(base, args, nproc=2):
    env = env_for(base)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "scripts.vis_tok_train"] + TINY + args
    env["MASTER_ADDR"] = "127.0.0.1"
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.slow  # ~1 minute: three small runs, two of them under torchrun
def test_ddp_matches_single_process(base):
    # as the CPU recipe trains: the CTC head on the vision tokens (part of the model but ignored by DDP,
    # its gradient averaged by hand) and Muon for the GPT's matrices (it steps on the all-reduced gradients)
    common = ["--num_steps=3", "--save_every=0", "--total_batch_size=8", "--ctc_weight=1", "--ctc_features=tokens",
              "--mode=32x128", "--matrix_lr=0.02"]
    run(base, common + ["--tag=single", "--device_batch_size=4"])  # 1 rank, 2 accumulation steps
    _torchrun(base, common + ["--tag=ddp", "--device_batch_size=4"])  # 2 ranks x 4
    _torchrun(base, common + ["--tag=ddp_accum", "--device_batch_size=2"])  # 2 ranks x 2 x 2 accumulation
    single = losses(base, "single")
    model_1, optim_1, _ = load_checkpoint(os.path.join(base, "vis_tok_checkpoints", "single"), load_optimizer=True)
    for tag in ("ddp", "ddp_accum"):
        other = losses(base, tag)
        assert len(other) == 3
        for (_, x), (_, y) in zip(single, other):
            assert abs(x - y) <= 1e-5, (tag, single, other)
        model_n, optim_n, _ = load_checkpoint(os.path.join(base, "vis_tok_checkpoints", tag), load_optimizer=True)
        for name in ("encoder.sam.patch_embed.weight", "gpt.lm_head.weight", "gpt.transformer.h.0.attn.c_q.weight"):
            assert torch.allclose(model_1[name], model_n[name], atol=1e-5), (tag, name)
        heads = [k for k in model_1 if k.startswith("ctc_head.")]
        assert heads and "ctc_head" not in optim_1, "the CTC head is saved with the model's weights"
        for name in heads:
            assert torch.allclose(model_1[name], model_n[name], atol=1e-5), (tag, name)


def cli(base, argv):
    return subprocess.run([sys.executable, "-m", "scripts.cli"] + argv, cwd=REPO, env=env_for(base),
                          capture_output=True, text=True, timeout=300)


def test_stage2_freezes_sam_and_trains_the_rest(base):
    run(base, ["--tag=s2", "--num_steps=2", "--save_every=0"])
    # `nanoocr mid-train` = the trainer with --preset=mid --stage=2 in front of the user's arguments
    p = cli(base, ["mid-train"] + TINY + ["--tag=s2", "--num_steps=2", "--save_every=0", "--lr_gpt=1e-3",
                                          "--lr_encoder=1e-3", "--lr_projector=1e-3", "--text_ratio=0.25"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    before, _, _ = load_checkpoint(os.path.join(base, "vis_tok_checkpoints", "s2"))
    after, _, meta = load_checkpoint(os.path.join(base, "vis_mid_checkpoints", "s2"))
    assert meta["stage"] == 2
    frozen = [k for k in before if k.startswith("encoder.sam.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    for prefix in ("encoder.clip.blocks", "encoder.projector", "gpt.transformer.h"):
        keys = [k for k in before if k.startswith(prefix)]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys), prefix


def test_mid_train_with_a_stage1_preset_stops_and_names_the_stage2_preset(base):
    """`nanoocr mid-train --preset=cpu` (cpu is Stage 1's preset) would train from random weights and
    file the result as Stage 2: it stops before building anything and says to use NAME_mid."""
    p = cli(base, ["mid-train", "--preset=cpu", "--tag=wrong_stage"])
    assert p.returncode != 0 and "init_from is empty" in p.stderr and "--preset=NAME_mid" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(base, "vis_mid_checkpoints", "wrong_stage"))


@pytest.mark.slow  # ~15 s: three runs, one killed mid-save
def test_sigkill_mid_save_keeps_previous_checkpoint(base):
    env = env_for(base)
    env["NANOOCR_TEST_PAUSE_BEFORE_META"] = "4:120"
    cmd = [sys.executable, "-m", "scripts.vis_tok_train"] + TINY + ["--tag=kill", "--num_steps=6", "--save_every=2"]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    for line in p.stdout:
        if "[test hook] pausing" in line:
            break
        assert time.time() < deadline, "never reached the step-4 save"
    p.send_signal(signal.SIGKILL)
    p.wait()
    d = os.path.join(base, "vis_tok_checkpoints", "kill")
    assert os.path.exists(os.path.join(d, "model_000004.pt"))  # the killed save wrote its data ...
    assert committed_steps(d) == [2]  # ... but without its meta it does not exist
    load_checkpoint(d, load_optimizer=True)  # the previous one loads
    out = run(base, ["--tag=kill", "--num_steps=6", "--save_every=2", "--resume=True"])
    assert "resumed from" in out and "step 2" in out
    assert committed_steps(d) == [2, 4, 6]


def test_fresh_run_into_a_used_tag_stops_unless_told_to_overwrite(base):
    """A fresh run (no --resume) into a tag holding checkpoints would leave the old, later steps
    behind for read / --resume to pick: it stops and names --resume and --overwrite; --overwrite
    deletes the old run's files (old tokenizer included) and trains from scratch."""
    d = checkpoint_dir_for("vis_tok", "used", str(base))
    os.makedirs(os.path.join(d, "tokenizer"))
    for f in ("model_000009.pt", "meta_000009.json", "optim_000009_rank0.pt", os.path.join("tokenizer", "tokenizer.json")):
        open(os.path.join(d, f), "w").close()
    env = env_for(base)
    p = subprocess.run([sys.executable, "-m", "scripts.vis_tok_train"] + TINY + ["--tag=used", "--num_steps=1"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "--resume=True" in p.stderr and "--overwrite=True" in p.stderr, p.stderr[-2000:]
    assert os.path.exists(os.path.join(d, "model_000009.pt"))  # nothing touched
    out = run(base, ["--tag=used", "--num_steps=1", "--save_every=0", "--overwrite=True"])
    assert "--overwrite: deleted" in out
    assert committed_steps(d) == [1] and not os.path.exists(os.path.join(d, "optim_000009_rank0.pt"))
    assert same_tokenizer(base, d)


def same_tokenizer(base, d):
    from nanoocr.tokenizer import Tokenizer
    a, b = Tokenizer.from_directory(str(base / "tokenizer")), Tokenizer.from_directory(os.path.join(d, "tokenizer"))
    return a.encode("hello world 42") == b.encode("hello world 42") and a.get_vocab_size() == b.get_vocab_size()


def test_weighted_mixture_with_the_renderer_first_trains(base, tmp_path):
    """--data=synth:3,a.jsonl:1 (the README's weighted mixture, renderer first) and --data=synth:2
    start, train a step and check the shipped fonts (the font manifest line)."""
    import json

    from PIL import Image
    (tmp_path / "images").mkdir()
    with open(tmp_path / "a.jsonl", "w") as f:
        for i in range(2):
            Image.new("RGB", (128, 32), "white").save(tmp_path / "images" / f"p{i}.png")
            f.write(json.dumps({"id": f"a{i}", "image": f"images/p{i}.png", "prompt": "<image>\nFree OCR.",
                                "answer": f"word {i}"}) + "\n")
    for i, data in enumerate((f"synth:3,{tmp_path / 'a.jsonl'}:1", "synth:2")):
        out = run(base, [f"--data={data}", f"--tag=mix{i}", "--num_steps=1", "--save_every=0", "--mode=32x128"])
        assert "fonts: " in out and "manifest sha256" in out, out[-2000:]
        assert committed_steps(checkpoint_dir_for("vis_tok", f"mix{i}", base)) == [1]
