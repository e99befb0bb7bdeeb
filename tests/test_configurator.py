import pytest

from nanoocr.configurator import ConfigError, configure


def scope():
    return {"batch_size": 16, "lr": 1e-3, "use_bf16": True, "run": "dummy", "data": None,
            "betas": (0.9, 0.95), "_private": 1, "helper": len}


def test_overrides_are_typed():
    s = scope()
    cfg = configure(s, ["--batch_size=32", "--lr=2e-3", "--use_bf16=False", "--run=x", "--betas=(0.8,0.9)", "--data=a.json"])
    assert s["batch_size"] == 32 and s["lr"] == 2e-3 and s["use_bf16"] is False and s["run"] == "x"
    assert s["betas"] == (0.8, 0.9) and s["data"] == "a.json"
    assert cfg == {k: s[k] for k in ["batch_size", "lr", "use_bf16", "run", "data", "betas"]}
    s = scope()
    configure(s, ["--lr=1"])  # an int is a fine float
    assert s["lr"] == 1.0 and isinstance(s["lr"], float)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key --bacth_size.*batch_size"):
        configure(scope(), ["--bacth_size=3"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="batch_size"):
        configure(scope(), ["--batch_size=lots"])
    with pytest.raises(ConfigError, match="batch_size"):
        configure(scope(), ["--batch_size=1.5"])
    with pytest.raises(ConfigError, match="bad argument"):
        configure(scope(), ["batch_size=3"])


def test_preset_file_and_precedence(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('# a preset\nbatch_size = 8\nlr = 5e-4\n')
    s = scope()
    cfg = configure(s, ["--lr=1e-2", f"--preset={p}"])  # the command line wins over the preset
    assert s["batch_size"] == 8 and s["lr"] == 1e-2 and cfg["preset"] == str(p)
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'nonsense'"):
        configure(scope(), [f"--preset={bad}"])
    code = tmp_path / "code.toml"
    code.write_text("import os\n")  # a preset is data: Python in it is a parse error naming the file
    with pytest.raises(ConfigError, match="code.toml: not a valid TOML preset"):
        configure(scope(), [f"--preset={code}"])
    table = tmp_path / "table.toml"
    table.write_text("[train]\nlr = 1e-3\n")
    with pytest.raises(ConfigError, match="only top-level"):
        configure(scope(), [f"--preset={table}"])
    with pytest.raises(ConfigError, match="not found"):
        configure(scope(), ["--preset=no_such_preset"])


def test_preset_base_applies_in_order_and_child_wins(tmp_path):
    (tmp_path / "a.toml").write_text('batch_size = 8\nlr = 5e-4\nrun = "a"\n')
    (tmp_path / "b.toml").write_text('lr = 7e-4\n')
    child = tmp_path / "c.toml"
    child.write_text(f'# builds on a then b\nbase = ["{tmp_path / "a.toml"}", "{tmp_path / "b.toml"}"]\nrun = "c"\n')
    s = scope()
    cfg = configure(s, [f"--preset={child}", "--batch_size=4"])
    assert (s["batch_size"], s["lr"], s["run"]) == (4, 7e-4, "c") and cfg["preset"] == str(child)
    assert "base" not in cfg


def test_preset_base_cycle_is_an_error(tmp_path):
    x, y = tmp_path / "x.toml", tmp_path / "y.toml"
    x.write_text(f'base = "{y}"\nlr = 1e-3\n')
    y.write_text(f'base = "{x}"\nlr = 2e-3\n')
    with pytest.raises(ConfigError, match="cycle"):
        configure(scope(), [f"--preset={x}"])


def test_stage2_presets_build_on_their_stage1_preset():
    from nanoocr.configurator import read_preset
    for name in ("cpu", "gpu", "full"):
        mid = read_preset(f"{name}_mid")
        assert mid["stage"] == 2 and mid["freeze_sam"] is True and mid["init_from"] == "stage1"
        assert mid["tag"] == read_preset(name)["tag"] and mid["encoder_size"] == read_preset(name)["encoder_size"]
