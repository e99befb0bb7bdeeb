"""
What a reader asks for, as plain values: the resolution modes (their sides, the Gundam tile-grid
rule, the mode a user or a checkpoint names) and the default prompt. Pure arithmetic, no pixels
and no torch: the encoder (deepencoder.num_image_tokens), the image front door (image_process) and
the dataset readers (tasks/) all import it, so the network does not depend on image loading and a
data-prep run does not pay for importing torch.

DeepSeek-OCR's modes are defined for its full-size encoder (SAM patch 16, input 1024 for Base).
Smaller encoder sizes scale every side by image_size / 1024 (rounded to a multiple of the encoder's
total stride), so "tiny"/"small"/"base"/"large"/"gundam" mean the same *relative* thing at any
size. Besides the named modes, a fixed (H, W) size reads one-line text strips.
"""

DEFAULT_PROMPT = "Free OCR."  # DeepSeek-OCR's plain-text prompt (dev/design.md §3)

# mode -> (side in pixels at the full size, how the image is fitted to the square)
# "resize" stretches to the square; "pad" keeps the aspect ratio and pads with grey (127).
MODES = {
    "tiny": (512, "resize"),
    "small": (640, "resize"),
    "base": (1024, "pad"),
    "large": (1280, "pad"),
    "gundam": (1024, "pad"),  # the global view; its tiles are "small"-sized and resized
}
GUNDAM_TILE_MODE = "small"
GUNDAM_MIN_TILES, GUNDAM_MAX_TILES = 2, 9


def mode_side(mode, image_size=1024, multiple=1):
    """Input side (pixels) of a mode for an encoder whose Base side is image_size, rounded to a
    multiple of the encoder's total stride so the net_3 grid is exact."""
    assert mode in MODES, f"unknown mode {mode!r}; choose one of {sorted(MODES)}"
    side = MODES[mode][0] * image_size / 1024
    return max(multiple, int(round(side / multiple)) * multiple)


def gundam_candidates(min_tiles=GUNDAM_MIN_TILES, max_tiles=GUNDAM_MAX_TILES):
    """All (wc, hc) grids with min_tiles <= wc*hc <= max_tiles, ordered by tile count (the order
    matters for the tie-break: a later, larger grid may replace an equally good smaller one)."""
    grids = {(i, j) for n in range(min_tiles, max_tiles + 1)
             for i in range(1, n + 1) for j in range(1, n + 1) if min_tiles <= i * j <= max_tiles}
    return sorted(grids, key=lambda g: (g[0] * g[1], g))


def gundam_grid(width, height, tile=640):
    """The (wc, hc) tile grid for an image of width x height, or None when both sides fit one tile
    (then the image is processed as a single Base-style view). Rule (DeepSeek-OCR): the grid whose
    aspect wc/hc is closest to width/height; on a tie the larger grid wins when the image area
    exceeds half the area of that grid's tiles."""
    if width <= tile and height <= tile:
        return None
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for wc, hc in gundam_candidates():
        diff = abs(aspect - wc / hc)
        if diff < best_diff:
            best, best_diff = (wc, hc), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * wc * hc:
            best = (wc, hc)
    return best


def parse_mode(mode):
    """A resolution mode as given on a command line or stored in a checkpoint: a name
    (tiny/small/base/large/gundam), an "HxW" string or an [H, W] list (fixed line strips) -> a name
    or an (H, W) tuple, which is what process_image takes."""
    if isinstance(mode, (list, tuple)):
        assert len(mode) == 2, f"a fixed mode is (height, width), got {mode!r}"
        return int(mode[0]), int(mode[1])
    text = str(mode).strip().lower()
    if text in MODES:
        return text
    parts = text.replace("*", "x").split("x")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)} or a fixed HxW size like 32x256")


def default_mode(meta):
    """The mode the model was trained with (its user_config; of a run trained in several, "base,tiny",
    the first), else base."""
    mode = (meta.get("user_config") or {}).get("mode") or "base"
    return parse_mode(train_modes(mode)[0])


def train_modes(mode):
    """A training config's mode -> the list of modes it trains in: one ("base", "32x256", [32, 256])
    or several, comma-separated ("base,large,small,tiny": one drawn per batch)."""
    if isinstance(mode, (list, tuple)):
        return [mode]
    return [m.strip() for m in str(mode).split(",") if m.strip()]


def check_mode(encoder_config, mode):
    """A clear error (instead of an assert deep in process_image) for a fixed size the encoder
    cannot tile exactly."""
    if isinstance(mode, tuple):
        s = encoder_config.stride
        if mode[0] <= 0 or mode[1] <= 0 or mode[0] % s or mode[1] % s:
            raise ValueError(f"mode {mode[0]}x{mode[1]}: both sides must be positive multiples of the "
                             f"encoder's stride ({s} pixels per vision token)")
    return mode


def resolve_mode(encoder_config, meta, mode=None):
    """The mode to read with: `mode` as a user gave it (parse_mode), else the one the model was
    trained with (default_mode of its meta); checked against the encoder (check_mode)."""
    return check_mode(encoder_config, parse_mode(mode) if mode else default_mode(meta))
