import json
import os
import shutil

import pytest
import torch
from conftest import FIXTURE_D2

from nanoocr.checkpoint_manager import (
    CheckpointError,
    committed_steps,
    find_last_step,
    gpt_from_state_dict,
    load_checkpoint,
    load_nanochat_gpt,
    save_checkpoint,
)
from nanoocr.gpt import GPTConfig, build_gpt


def make_model():
    torch.manual_seed(0)
    return build_gpt(GPTConfig(sequence_len=32, vocab_size=200, n_layer=2, n_head=2, n_kv_head=1, n_embd=32),
                     proj_std=0.05).eval()


def test_round_trip_identical_logits(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 200, (2, 10))
    model(idx, targets=idx).backward()
    opt.step()
    meta = {"model_config": vars(model.config), "user_config": {"lr": 1e-3}, "step": 5}
    save_checkpoint(str(tmp_path), 5, model.state_dict(), opt.state_dict(), meta)
    model_data, optim_data, meta2 = load_checkpoint(str(tmp_path), load_optimizer=True)
    assert meta2["step"] == 5 and meta2["user_config"] == {"lr": 1e-3}
    again = gpt_from_state_dict(meta2["model_config"], model_data, "x")
    with torch.no_grad():
        assert torch.equal(again(idx), model(idx))
    opt2 = torch.optim.AdamW(again.parameters(), lr=1e-3)
    opt2.load_state_dict(optim_data)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # no temp files left behind


def test_step_without_meta_is_ignored(tmp_path):
    model = make_model()
    meta = {"model_config": vars(model.config), "step": 1}
    save_checkpoint(str(tmp_path), 1, model.state_dict(), None, meta)
    # a later step whose save died before the commit marker: model file present, meta absent
    torch.save(model.state_dict(), tmp_path / "model_000002.pt")
    assert committed_steps(str(tmp_path)) == [1]
    assert find_last_step(str(tmp_path)) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    torch.save(model.state_dict(), empty / "model_000003.pt")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        find_last_step(str(empty))


def test_truncated_checkpoint_names_file(tmp_path):
    model = make_model()
    save_checkpoint(str(tmp_path), 1, model.state_dict(), None, {"model_config": vars(model.config)})
    path = tmp_path / "model_000001.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model_000001.pt"):
        load_checkpoint(str(tmp_path))


def test_mismatched_config_names_field(tmp_path):
    d = tmp_path / "d2"
    shutil.copytree(os.path.join(FIXTURE_D2, "base_checkpoints", "d2"), d)
    meta = json.load(open(d / "meta_000000.json"))
    meta["model_config"]["n_kv_head"] = 4  # the fixture really has 2 kv heads
    json.dump(meta, open(d / "meta_000000.json", "w"))
    with pytest.raises(CheckpointError, match="n_kv_head=4"):
        load_nanochat_gpt(str(d), os.path.join(FIXTURE_D2, "tokenizer"))
    meta["model_config"]["n_kv_head"] = 2
    meta["model_config"]["n_embd"] = 128
    json.dump(meta, open(d / "meta_000000.json", "w"))
    with pytest.raises(CheckpointError, match="n_embd=128"):
        load_nanochat_gpt(str(d), os.path.join(FIXTURE_D2, "tokenizer"))


def test_compile_prefix_and_unpadded_vocab(tmp_path):
    model = make_model()  # vocab 200 -> padded to 256 internally
    sd = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    sd["_orig_mod.transformer.wte.weight"] = sd["_orig_mod.transformer.wte.weight"][:200].clone()
    sd["_orig_mod.lm_head.weight"] = sd["_orig_mod.lm_head.weight"][:200].clone()
    again = gpt_from_state_dict(vars(model.config), sd, "x")
    idx = torch.randint(0, 200, (1, 8))
    with torch.no_grad():
        assert torch.equal(again(idx), model(idx))
