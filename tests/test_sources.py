"""
The one --data grammar (tasks/sources.py) as the trainer, `eval` and `sample` use it: weights,
renderer kinds, realistic rows and paths; weighted mixtures with the renderer first; each dataset
read once per start-up. In-process and fast; the end-to-end runs are in test_train.py (trainer)
and test_read_eval.py (eval, sample).
"""

import json
import os
from collections import Counter

import pytest
from PIL import Image

from tasks import sources
from tasks.sources import (
    build_source,
    open_samples,
    parse_data,
    training_sources,
    uses_synth,
)


def write_dataset(d, n=3):
    """A JSONL dataset of n tiny images; -> its path."""
    os.makedirs(d / "images", exist_ok=True)
    with open(d / "a.jsonl", "w") as f:
        for i in range(n):
            Image.new("RGB", (32, 16), (255, 255, 255)).save(d / "images" / f"p{i}.png")
            f.write(json.dumps({"id": f"a{i}", "image": f"images/p{i}.png", "prompt": "<image>\nFree OCR.",
                                "answer": f"word {i}"}) + "\n")
    return str(d / "a.jsonl")


def test_parse_data_weights_kinds_rows_and_paths(tmp_path):
    path = write_dataset(tmp_path)
    assert parse_data("synth") == [("synth", "", 1.0)]
    assert parse_data("synth:2") == [("synth", "", 2.0)]
    assert parse_data(f"synth:3,{path}:1") == [("synth", "", 3.0), (path, "", 1.0)]
    assert parse_data("synth:page:0.5,synth:line") == [("synth", "page", 0.5), ("synth", "line", 1.0)]
    assert parse_data("realistic:photos") == [("realistic", "photos", 1.0)]
    assert parse_data("tier1:2,prose") == [("tier1", "", 2.0), ("prose", "", 1.0)]
    # an existing path is taken whole, colons included
    odd = tmp_path / "x:2.jsonl"
    odd.write_text("")
    assert parse_data(str(odd)) == [(str(odd), "", 1.0)]
    assert uses_synth("a.json:1,synth:3") and not uses_synth(path) and not uses_synth("")
    for bad, match in (("synth,,a.json", "empty item"), ("synth:0", "weight 0"), ("synth:-1", "weight -1"),
                       ("realistic", "needs a row"), ("prose:x", "takes no argument"),
                       ("synth:pages", "not a renderer kind")):
        with pytest.raises(ValueError, match=match):
            parse_data(bad)


def test_training_mixture_with_weighted_synth_first(tmp_path):
    """synth:3,a.jsonl:1 (the README's weighted mixture, renderer first) and synth:2 start; the
    shares follow the weights."""
    path = write_dataset(tmp_path)
    train, val, _, val_records = training_sources(f"synth:3,{path}:1", mode=(32, 128), n_val_records=4)
    ids = [train(i)["id"] for i in range(400)]
    share = sum(i.startswith("synth-train") for i in ids) / len(ids)
    assert 0.68 <= share <= 0.82, share  # 3 / (3 + 1) = 0.75
    assert {i for i in ids if i.startswith("a")} == {"a0", "a1", "a2"}
    assert len(val_records) == 4 and all(r["image_pil"].size == (128, 32) for r in val_records if r["id"].startswith("synth"))
    train, _, _, val_records = training_sources("synth:2", mode=(32, 128), n_val_records=2)
    assert train(0)["id"] == "synth-train-line-0" and len(val_records) == 2
    # a renderer kind in the item overrides synth_kinds
    src = build_source("synth:page:1", "val", synth_kinds="line")
    assert src(0)["id"] == "synth-val-page-0"
    with pytest.raises(ValueError, match="test set"):
        build_source("realistic:photos", "train")


def test_each_dataset_is_read_once_at_start_up(tmp_path, monkeypatch):
    """train, the easy-font curriculum and val all draw on the same dataset: one read of its file
    (parquet shards hold their image bytes in memory, so every extra read is the dataset's size again)."""
    path = write_dataset(tmp_path)
    other = write_dataset(tmp_path / "b")
    reads = Counter()
    real = sources.open_source

    def counting(kind, p, *args, **kwargs):
        reads[p] += 1
        return real(kind, p, *args, **kwargs)

    monkeypatch.setattr(sources, "open_source", counting)
    training_sources(f"synth:3,{path}:1,{other}", easy_samples=8, n_val_records=2)
    assert reads == {path: 1, other: 1}
    reads.clear()
    training_sources(path, val_data=f"{other},{path}", easy_samples=8, n_val_records=2)  # val from the first val item
    assert reads == {path: 1, other: 1}


def test_open_samples_takes_every_item_in_turn(tmp_path):
    """eval / sample: a weighted synth first works (the weight only shapes training), each item's
    samples in turn, at most `limit` of each."""
    path = write_dataset(tmp_path)
    samples, desc = open_samples(f"synth:3,{path}:1", limit=2, mode=(32, 128))
    assert [s["id"] for s in samples] == ["synth-val-line-0", "synth-val-line-1", "a0", "a1"]
    assert desc == f"synth:line (val) + {path} (jsonl)"
    samples, desc = open_samples("synth:2", limit=3)
    assert len(samples) == 3 and desc == "synth:line (val)"
    samples, _ = open_samples("synth:1", limit=1)  # "1" is a weight, not a renderer kind
    assert samples[0]["id"] == "synth-val-line-0"
    samples, desc = open_samples("synth:page", limit=1)
    assert samples[0]["id"] == "synth-val-page-0" and desc == "synth:page (val)"
    # "" = the model's val data from its training config: the whole list
    samples, _ = open_samples("", limit=1, user_config={"data": f"synth:3,{path}:1", "synth_kinds": "line"})
    assert [s["id"] for s in samples] == ["synth-val-line-0", "a0"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_samples("nope.jsonl:2")
