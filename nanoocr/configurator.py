"""
Command-line configuration in nanoGPT/nanochat's style, without exec():

    # at the top of a script
    batch_size = 16
    lr = 1e-3
    ...
    config = configure(globals())   # applies --preset=NAME and --key=value, returns the resolved dict

The config keys are the script's module-level values of simple types (int, float, bool, str,
None, tuple, list) whose names do not start with "_". Precedence: script defaults < preset
file < command line. Values are type-checked against the defaults; an unknown key is an error
that lists the valid keys. The returned dict is what scripts store in every checkpoint's meta.

Preset files are TOML: top-level `key = value` lines and `#` comments that say why, data that cannot
run code (tomllib is in the standard library). `--preset=cpu` reads presets/cpu.toml from the
repository; `--preset=path/to/file.toml` reads that file. A preset may build on others: `base = "cpu"`
(or a list, `base = ["cpu", "mid"]`) applies those presets first, in order, and the file's own values
override them, so a preset holds only what it changes (presets/cpu_mid.toml is presets/cpu.toml +
presets/mid.toml + its own lines). A cycle is an error. Given twice, the last --preset counts (so a
default put in front, as `nanoocr mid-train` puts --preset=mid, gives way to the user's).
Presets are named for model sizes / jobs (cpu, full, tier1, ...), never tiny/small/base/large/gundam,
which are DeepSeek-OCR's *resolution modes*.
"""

import ast
import os
import sys

import tomllib

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets")
_SIMPLE = (int, float, bool, str, tuple, list, type(None))


class ConfigError(ValueError):
    pass


def config_keys(scope):
    return [k for k, v in scope.items() if not k.startswith("_") and isinstance(v, _SIMPLE)
            and not callable(v)]


def _coerce(key, raw, default, source):
    """Turn a string (or a preset literal) into a value of the default's type, or raise."""
    if isinstance(raw, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            if isinstance(default, bool) and raw.lower() in ("true", "false"):
                value = raw.lower() == "true"
            elif default is None:
                value = raw  # a None default takes any literal, else the raw string
            else:
                raise ConfigError(f"{source}: --{key}={raw!r} is not a valid {type(default).__name__} "
                                  f"(default {default!r})") from None
    else:
        value = raw
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    elif type(value) is type(default):
        return value
    raise ConfigError(f"{source}: {key}={value!r} has type {type(value).__name__}, "
                      f"expected {type(default).__name__} (default {default!r})")


def preset_path(name):
    """A preset name (presets/NAME.toml) or a path to a .toml file -> the file's path."""
    return name if (os.sep in name or name.endswith(".toml")) else os.path.join(PRESET_DIR, name + ".toml")


def read_preset(name, _chain=()):
    """The values of presets/NAME.toml (or a path) -> dict, its `base` presets resolved (applied
    first, in order; the file's own values win)."""
    path = preset_path(name)
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".toml")) if os.path.isdir(PRESET_DIR) else []
        raise ConfigError(f"preset {name!r} not found at {path}; known presets: {', '.join(known) or 'none'}")
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not a valid TOML preset: {e}") from None
    for key, value in values.items():
        if isinstance(value, dict):  # a [table] or a.b key: the trainer's config is flat
            raise ConfigError(f"{path}: presets hold only top-level `key = value` lines, not the table {key!r}")
    bases = values.pop("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: base must be a preset name or a list of them, not {bases!r}")
    chain = _chain + (os.path.abspath(path),)
    resolved = {}
    for b in bases:
        if os.path.abspath(preset_path(b)) in chain:
            raise ConfigError(f"{path}: base {b!r} makes a cycle: " + " -> ".join(chain + (os.path.abspath(preset_path(b)),)))
        resolved.update(read_preset(b, chain))
    resolved.update(values)
    return resolved


def configure(scope, argv=None):
    """Apply --preset and --key=value overrides to `scope` (a script's globals()) in place and
    return the resolved {key: value} dict. On the real command line (argv None) a bad argument
    exits with the message (status 2) instead of a traceback; with an explicit argv it raises."""
    if argv is None:
        try:
            return _configure(scope, sys.argv[1:])
        except ConfigError as e:
            print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
            sys.exit(2)
    return _configure(scope, argv)


def _configure(scope, argv):
    keys = config_keys(scope)
    defaults = {k: scope[k] for k in keys}
    overrides, preset = {}, None
    for arg in argv:
        if arg in ("-h", "--help"):
            print("config keys (override with --key=value, or --preset=NAME):")
            for k in sorted(keys):
                print(f"  --{k}={defaults[k]!r}")
            sys.exit(0)
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"bad argument {arg!r}: use --key=value (valid keys: {', '.join(sorted(keys))})")
        key, raw = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key == "preset":
            preset = raw
            continue
        overrides[key] = raw
    resolved = {}
    if preset is not None:
        for key, value in read_preset(preset).items():
            if key not in defaults:
                raise ConfigError(f"preset {preset!r} sets unknown key {key!r}; valid keys: {', '.join(sorted(keys))}")
            resolved[key] = _coerce(key, value, defaults[key], f"preset {preset}")
    for key, raw in overrides.items():
        if key not in defaults:
            raise ConfigError(f"unknown config key --{key}; valid keys: {', '.join(sorted(keys))}")
        resolved[key] = _coerce(key, raw, defaults[key], "command line")
    scope.update(resolved)
    config = {k: scope[k] for k in keys}
    if preset is not None:
        config["preset"] = preset
    return config
