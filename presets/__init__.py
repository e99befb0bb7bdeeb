"""Training presets: TOML files of `key = value` lines (nanoocr/configurator.py reads them; `--preset=NAME`).
This file only makes the folder a package, so `pip install .` ships them."""
