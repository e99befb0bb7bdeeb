"""
What a scanner (or a fax machine) does to a printed page, for tasks/realistic.py's scan rows.
Each function takes a clean render (dark ink on near-white paper, as realistic.draw_block draws it) and a
random.Random, and returns what the device would hand a user:

    bilevel      a document-mode scan: tilted, sensor noise, one global threshold -> PIL mode "1"
                 (black and white only), optionally with dust specks and ink drop-outs
    recolour     the same page printed on other paper in another ink (tinted paper, pencil grey)
    scanned      a greyscale or colour scan: tilt, optics blur, sensor noise, optionally JPEG
    write_tiff   a mode "1" image written as a TIFF file (uncompressed, PackBits, LZW or CCITT G4) the
                 way a scanner or fax-to-file pipeline stores it

Like the rest of tasks/realistic.py: numpy and PIL only (no cv2: its resamplers differ between builds),
every random choice drawn from the rng passed in, so a sample is a pure function of its seed.
"""

import io
import os

import numpy as np
from PIL import Image, ImageFilter


def _nrng(rng):
    return np.random.default_rng(rng.randrange(1 << 32))


def tilt(img, rng, max_deg, fill):
    """Rotate by up to ±max_deg degrees (a page laid slightly crooked on the glass), the canvas grown
    so no ink is cut off, the new corners filled with the paper colour."""
    return img.rotate(rng.uniform(-max_deg, max_deg), resample=Image.BICUBIC, expand=True, fillcolor=fill)


def speckle(ink, rng, density):
    """Dust and toner specks on a bool ink mask (True = black): density * pixels specks of 1-4 pixels
    (1x1, 1x2, 2x1 or 2x2), and 1-4% of the ink pixels dropped out (a worn toner drum, a dirty glass).
    A strips cutter drops specks of 1-2 pixels; the 2x2 ones it must tell from punctuation itself."""
    nrng = _nrng(rng)
    h, w = ink.shape
    out = ink & ~(nrng.random(ink.shape) < rng.uniform(0.01, 0.04))
    n = int(density * h * w)
    ys, xs = nrng.integers(0, max(1, h - 1), n), nrng.integers(0, max(1, w - 1), n)
    dy, dx = nrng.integers(0, 2, n), nrng.integers(0, 2, n)
    out[ys, xs] = True
    out[ys + dy, xs + dx] = True
    return out


def bilevel(img, rng, max_tilt=1.0, speckle_p=0.5):
    """A clean render -> a document-mode scan, PIL mode "1": tilted by up to max_tilt degrees, sensor
    noise (sigma 3-10 grey levels) and a global threshold of 100-170 (a scanner's brightness setting:
    lower thins strokes, higher thickens them; the noise makes their edges ragged), then with
    probability speckle_p dust specks at 0.01-0.1% of the pixels (speckle)."""
    grey = tilt(img.convert("L"), rng, max_tilt, 255) if max_tilt else img.convert("L")
    a = np.asarray(grey, np.float32) + _nrng(rng).normal(0, rng.uniform(3, 10), grey.size[::-1])
    ink = a < rng.randint(100, 170)
    if rng.random() < speckle_p:
        ink = speckle(ink, rng, rng.uniform(1e-4, 1e-3))
    return Image.fromarray(~ink)  # a bool array is mode "1": True = white paper


def recolour(img, paper, ink):
    """A render on near-white paper in near-black ink -> the same page on `paper` in `ink` (RGB
    tuples). Each pixel's ink coverage (0 on the paper, 1 in a stroke's core, between on anti-aliased
    edges) is read off its grey level, so edges stay smooth in the new colours."""
    g = np.asarray(img.convert("L"), np.float32)
    hi, lo = float(g.max()), float(g.min())
    cov = np.clip((hi - g) / max(1.0, hi - lo), 0, 1)[..., None]
    out = np.array(paper, np.float32) * (1 - cov) + np.array(ink, np.float32) * cov
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def jpeg(img, quality):
    """JPEG round trip in the image's own mode (a greyscale scan stays greyscale)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def scanned(img, rng, paper, max_tilt=1.5, jpeg_p=0.5, grey=False):
    """A greyscale (grey=True, PIL mode "L") or colour scan of a page already on its paper: tilted by up
    to max_tilt degrees (corners filled with `paper`), a lid-shadow gradient darkening one side by up to
    12%, optics blur (sigma 0.3-0.8), sensor noise (sigma 2-6), and with probability jpeg_p saved as JPEG
    at quality 60-92 (what many scanners write by default)."""
    img = tilt(img, rng, max_tilt, paper)
    a = np.asarray(img, np.float32)
    h, w = a.shape[:2]
    across = rng.random() < 0.5  # the shadow falls across the lines or along them
    ramp = np.linspace(0, 1, w if across else h, dtype=np.float32)
    ramp = ramp if rng.random() < 0.5 else ramp[::-1]
    shade = 1 - rng.uniform(0.0, 0.12) * (ramp[None, :] if across else ramp[:, None])
    a = a * shade[..., None]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    a = np.asarray(img, np.float32) + _nrng(rng).normal(0, rng.uniform(2, 6), (h, w, 1))
    img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "RGB")
    if grey:
        img = img.convert("L")
    return jpeg(img, rng.randint(60, 92)) if rng.random() < jpeg_p else img


TIFF_COMPRESSIONS = ("raw", "packbits", "tiff_lzw", "group4")


def write_tiff(img, path, compression, dpi):
    """A mode "1" image -> a TIFF file at path (written to a temporary name and renamed, so a reader
    never sees half a file), with its dpi tag. compression: one of TIFF_COMPRESSIONS; "group4" is CCITT
    T.6, what fax machines and fax-to-file pipelines store (Pillow writes it through libtiff)."""
    assert img.mode == "1", f"tasks/scans.py: write_tiff stores bilevel scans; got mode {img.mode!r} (use bilevel() first)"
    assert compression in TIFF_COMPRESSIONS, f"tasks/scans.py: compression {compression!r}; one of {TIFF_COMPRESSIONS}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    img.save(tmp, format="TIFF", compression=compression, dpi=dpi)
    os.replace(tmp, path)
    return path
