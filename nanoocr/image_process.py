"""
Image preprocessing: the resolution modes, the Gundam tile-grid rule, and (to be extended)
PIL image -> normalised tensors per mode.

DeepSeek-OCR's modes are defined for its full-size encoder (SAM patch 16, input 1024 for Base).
Smaller presets scale every side by image_size / 1024 (rounded to a multiple of the encoder's
total stride), so "tiny"/"small"/"base"/"large"/"gundam" mean the same *relative* thing at any
preset. The count of vision tokens follows from the side via the encoder config (deepencoder.py).
"""

# mode -> (side in pixels at the full preset, how the image is fitted to the square)
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
