"""
Image preprocessing: loading user files safely (any PIL mode, EXIF rotation, truncated, renamed
or oversized files -> an RGB image or a clear ImageError), telling image bytes from impostors,
and PIL image -> normalised tensors per resolution mode.

The modes themselves (sides, the Gundam tile-grid rule, parsing a mode name) are numbers only and
live in modes.py; the count of vision tokens follows from the side via the encoder config
(deepencoder.py).
"""

import io
import os
import threading

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from nanoocr.modes import GUNDAM_TILE_MODE, MODES, gundam_grid, mode_side

# -----------------------------------------------------------------------------
# Loading: any file / bytes / PIL image -> a fully decoded RGB PIL image, or a clear ImageError.

# Refuse images above this many pixels *before* decoding them: a few-KB PNG can claim
# 100000 x 100000 pixels and would need 30 GB to decode. 64M pixels (~8000 x 8000, 192 MB as RGB)
# covers a 600-dpi A4 scan with room to spare and stays below Pillow's own limit
# (Image.MAX_IMAGE_PIXELS, ~89M), so Pillow's warning never fires for an image we accept.
DEFAULT_MAX_PIXELS = 64_000_000
PAD_COLOR = (127, 127, 127)  # DeepSeek-OCR pads with mean*255, rounded down (dev/design.md §2)
MEAN = STD = 0.5             # per-channel normalisation: pixels end up in [-1, 1]
BICUBIC = Image.Resampling.BICUBIC
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
    """An input that cannot become an image: not an image at all, truncated or corrupt, too large.
    A ValueError so callers can skip bad samples with one except clause; the message always
    names the file, says what is wrong and what to do about it."""


# Magic numbers of the formats Pillow decodes out of the box. The bytes decide, not the file name or
# a declared content type (the server answers 415 to a PDF renamed to .png before decoding anything).
IMAGE_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"P1", "pnm"), (b"P2", "pnm"), (b"P3", "pnm"), (b"P4", "pnm"), (b"P5", "pnm"), (b"P6", "pnm"),
]


def sniff_image_type(data):
    """The image format the bytes start with, or None when they are not an image we decode."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, kind in IMAGE_MAGIC:
        if data.startswith(magic):
            return kind
    return None


def describe_non_image(head):
    """Explain a file Pillow cannot identify from its first bytes (users rename PDFs and SVGs to
    .png surprisingly often, and a failed download is usually an HTML page)."""
    if len(head) == 0:
        return "the file is empty (0 bytes); re-download or re-export it"
    if head.startswith(b"%PDF"):
        return ("it is a PDF document, not a raster image; `nanoocr read`, nanoocr.read() and the server's "
                "/ocr read PDFs page by page (nanoocr/documents.py), or render its pages to PNG first "
                "(e.g. `pdftoppm -r 200 -png FILE page`)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text[:1024] or (text.startswith(b"<?xml") and b"svg" in text):
        return "it is an SVG (vector) file; rasterise it to PNG first (e.g. `rsvg-convert FILE -o out.png`)"
    if text.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a failed download?), not an image; fetch the real image file"
    return "it is not in any image format Pillow can read (corrupt, or not an image); check the file"


# Pillow refuses images over 2x its own MAX_IMAGE_PIXELS inside Image.open, before we see the size.
# When the caller allows more than that, we re-open with Pillow's check off just for the header
# read (it is a process-wide setting, hence the lock) and apply our own limit right after.
_PIL_LIMIT_LOCK = threading.Lock()


def _open_lazy(src, own_limit=True):
    """Image.open (header only, nothing decoded yet). own_limit: the caller checks the size against
    its own max_pixels (_finish), so Pillow's bomb check is set aside; without one, Pillow's stands."""
    try:
        return Image.open(src)
    except Image.DecompressionBombError:
        if not own_limit:
            raise
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                if hasattr(src, "seek"):
                    src.seek(0)
                return Image.open(src)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _to_l8(im):
    """High-bit-depth single channel (I;16*, I, F) -> 8-bit L, scaled rather than clipped
    (Pillow's own convert("L") clips I;16 at 255, turning a 16-bit scan almost all white)."""
    a = np.asarray(im).astype(np.float32)
    if im.mode.startswith("I;16"):
        a = a / 257.0  # the full 16-bit range is known: 65535 -> 255, keeps relative brightness
    else:
        # I (32-bit int) and F (float) carry no fixed range: stretch the actual finite range.
        finite = np.isfinite(a)
        lo = float(a[finite].min()) if finite.any() else 0.0
        hi = float(a[finite].max()) if finite.any() else 0.0
        a = np.where(finite, a, lo)
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else a  # a constant image keeps its value
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def to_rgb(im):
    """Any PIL mode -> RGB. Transparency is composited on white (the page colour OCR expects:
    Pillow's plain convert("RGB") would turn transparent pixels black or leave the hidden colour)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        im = _to_l8(im)
    if im.mode == "La":  # premultiplied; Pillow only converts it via LA
        im = im.convert("LA")
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")  # also turns P/L/RGB "transparency" entries into alpha
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX


def load_image(src, max_pixels=DEFAULT_MAX_PIXELS, name=None):
    """Open a path, bytes, file object or PIL image and return a fully decoded RGB PIL image, with
    EXIF orientation applied. Anything that is not a readable image raises ImageError naming
    `name` (default: the path, or "<bytes>" / "<PIL image>"). max_pixels=None leaves only Pillow's
    own decompression-bomb limit (Image.MAX_IMAGE_PIXELS), which is never turned off."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Pillow would then pad truncated files with grey and return them silently as training data.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; nanoocr needs "
                           "it False so truncated images are reported, not silently half-grey")
    if isinstance(src, Image.Image):
        name = name or getattr(src, "filename", "") or "<PIL image>"
        return _finish(src, max_pixels, name)
    if isinstance(src, (str, os.PathLike)):
        name = name or os.fspath(src)
        try:
            with open(src, "rb") as f:
                head = f.read(1024)
        except OSError as e:
            raise ImageError(f"{name}: cannot read the file ({e.strerror or e}); check the path") from e
        fp = src
    else:
        data = src.read() if hasattr(src, "read") else bytes(src)
        name = name or "<bytes>"
        head, fp = data[:1024], io.BytesIO(data)
    try:
        im = _open_lazy(fp, own_limit=max_pixels is not None)
    except MemoryError:
        raise
    except Image.DecompressionBombError as e:  # max_pixels=None: Pillow's own guard still holds
        raise ImageError(f"{name}: {e}") from e
    except Exception as e:  # UnidentifiedImageError, SyntaxError, struct.error, ... from Pillow's plugins
        raise ImageError(f"{name}: not a readable image: {describe_non_image(head)}") from e
    with im:  # closes a file Pillow opened itself (multi-frame images keep it open otherwise)
        return _finish(im, max_pixels, name)


def _finish(im, max_pixels, name):
    """Bomb check on the header size, full decode, EXIF rotation, RGB."""
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image has zero size ({w}x{h}); nothing to read")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                         f"(a guard against decompression bombs); downscale the image, or pass a "
                         f"larger max_pixels to load_image if you trust it")
    try:
        im.load()  # force the full decode now: a truncated or corrupt stream raises here, not later
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(f"{name}: the image data is truncated or corrupt ({e}); "
                         f"re-download or re-export the file") from e
    try:
        out = ImageOps.exif_transpose(im)  # phone photos store pixels sideways plus an EXIF flag
    except Exception:
        out = im  # a corrupt EXIF block should not cost us an otherwise good image: keep as stored
    out = to_rgb(out)
    return out.copy() if out is im else out  # never hand back the caller's (or a closing) object


# -----------------------------------------------------------------------------
# Processing: RGB image -> normalised tensors for one resolution mode.

def to_tensor(im):
    """RGB PIL image -> float tensor [3, H, W] normalised with mean = std = 0.5 (values in [-1, 1])."""
    x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float()
    return x.div_(255.0).sub_(MEAN).div_(STD)


def _fitted(size, width, height):
    """The (w, h) an image of `size` takes inside width x height, its aspect ratio kept."""
    w, h = size
    scale = min(width / w, height / h)
    # at least 1 pixel per side: a 20000 x 10 strip fitted into 1024 would otherwise round to 0 rows
    return min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))


def pad_to(im, width, height):
    """Resize to fit inside width x height keeping the aspect ratio, centred on PAD_COLOR.
    Returns (image, fraction of the canvas covered by the image)."""
    nw, nh = _fitted(im.size, width, height)
    canvas = Image.new("RGB", (width, height), PAD_COLOR)
    canvas.paste(im.resize((nw, nh), BICUBIC), ((width - nw) // 2, (height - nh) // 2))
    return canvas, nw * nh / (width * height)


def view_geometry(processed):
    """(sx, sy, ox, oy): where a pixel (x, y) of the image process_image was given lands in its
    global view, (ox + sx * x, oy + sy * y) -- stretched (fixed sizes, tiny, small) or fitted and
    centred on the padding (base, large, gundam's global view), as process_image and pad_to place it."""
    w, h = processed["size"]
    H, W = processed["global_view"].shape[-2:]
    if processed["mode"] == "fixed" or MODES[processed["mode"]][1] == "resize":
        return W / w, H / h, 0.0, 0.0
    nw, nh = _fitted((w, h), W, H)
    return nw / w, nh / h, float((W - nw) // 2), float((H - nh) // 2)


def square_valid_ratio(w, h):
    """Fraction of a padded square view that holds image, written as the released DeepSeek-OCR
    code computes it (dev/design.md §2), so int(N * ratio) reproduces its "valid" token counts."""
    return 1 - (max(w, h) - min(w, h)) / max(w, h)


def process_image(img, mode, image_size=1024, multiple=16):
    """Image -> normalised tensors for one resolution mode.

    img: an RGB PIL image (anything else is passed through load_image first).
    mode: "tiny" | "small" | "base" | "large" | "gundam", sides scaled by image_size / 1024 and
      rounded to `multiple` (the encoder's total stride); or a (height, width) tuple for a fixed
      non-square input (e.g. one-line text strips), stretched to it.
    Returns dict(global_view [3,S,S] (or [3,H,W]), tiles [n,3,t,t] or None, grid (wc, hc) or None,
      mode, valid_ratio (fraction of the global view that is image, 1.0 when stretched), size (w, h)).
    Gundam: tiles (row-major, wc*hc of them) come from the image stretched to t*wc x t*hc; the
    global view is padded like Base. With no grid (both sides fit one tile) there are no tiles."""
    if not isinstance(img, Image.Image):
        img = load_image(img)
    img = to_rgb(img)
    w, h = img.size
    tiles = grid = None
    if isinstance(mode, (tuple, list)):
        H, W = (int(s) for s in mode)
        assert H > 0 and W > 0 and H % multiple == 0 and W % multiple == 0, \
            f"fixed size {(H, W)} must be positive multiples of the encoder stride {multiple}"
        return dict(global_view=to_tensor(img.resize((W, H), BICUBIC)), tiles=None, grid=None, mode="fixed",
                    valid_ratio=1.0, size=(w, h))
    side = mode_side(mode, image_size, multiple)
    if MODES[mode][1] == "resize":
        view, valid = img.resize((side, side), BICUBIC), 1.0  # stretch: tiny/small ignore aspect
    else:
        view, _ = pad_to(img, side, side)
        valid = square_valid_ratio(w, h)
    if mode == "gundam":
        t = mode_side(GUNDAM_TILE_MODE, image_size, multiple)
        grid = gundam_grid(w, h, tile=t)
        if grid is not None:
            wc, hc = grid
            mosaic = to_tensor(img.resize((t * wc, t * hc), BICUBIC))  # [3, t*hc, t*wc]
            # cut row-major: tile r*wc + c is rows r*t.., columns c*t.. (same as cropping, one copy)
            tiles = mosaic.view(3, hc, t, wc, t).permute(1, 3, 0, 2, 4).reshape(hc * wc, 3, t, t)
    return dict(global_view=to_tensor(view), tiles=tiles, grid=grid, mode=mode,
                valid_ratio=valid, size=(w, h))


def process_for_encoder(img, mode, encoder_config):
    """process_image at an encoder's geometry (its Base side image_size, its total stride): the one
    way training (vision_dataloader.prepare_vision) and reading (engine.preprocess) turn an image
    into the model's input, so a model reads images exactly as it was trained on them."""
    return process_image(img, mode, image_size=encoder_config.image_size, multiple=encoder_config.stride)
