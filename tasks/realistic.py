"""
Realistic test sets: the images users actually bring, drawn with the renderer's shipped fonts and
the test split's text. The strip model trains on 32x256 one-line strips; each row here
moves one step further from that, so a table of rows says where reading breaks down:

    clean_lines     tight crops of one printed line, 3-10 words, 16-40 px, training families
    degraded_lines  the same lines rotated, blurred, salted and JPEG-compressed
    unseen_fonts    clean line crops in families no recipe trains on (HELD_OUT_FAMILIES)
    paragraphs      crops of 2-5-line paragraphs
    pages           a clean one-column page scan of 10-20 lines, sometimes with a title
    photos          a phone photo of a printed page: uneven light, perspective, blur, JPEG, colour cast
    symbols         a clean 12-line scan full of $ % @ { } [ ] < > « » „ ” “ and accented letters
    columns         the renderer's Fox-style page (synth "page", 1024x1024, test degradations) set in 2 or 3
                    columns (alternately), maybe a title above them: read in reading order, column by column
    turned          a "pages" page turned by 90, 180 or 270 degrees clockwise (the row's seed picks each)

and what scanners and fax machines produce (the degradations are in tasks/scans.py), text
printed at 9-12 pt and scanned at 150-300 dpi:

    bilevel_lines   1-bit line crops (PIL mode "1"): a document-mode scan's global threshold at 200-300
                    dpi, tilted up to 1 degree, half of them with dust specks and ink drop-outs
    bilevel_pages   1-bit page scans (mode "1") the same way, tilted up to 1.5 degrees
    tiff_pages      1-bit page scans as TIFF files on disk (uncompressed, PackBits or LZW), read from the file
    fax_pages       fax pages as CCITT G4 TIFF files: 204x196 dpi ("fine"), 1728 px wide, always speckled
    grey_scans      8-bit greyscale page scans (mode "L"): grey paper, tilt, lid shadow, blur, noise, JPEG
    colour_scans    colour page scans on tinted paper (cream, yellow, blue, pink, green, recycled) in
                    black, blue-black or brown ink
    pencil_lines    low-contrast line crops: pencil-grey text (grey 95-150) on off-white paper

    nanoocr eval --data=realistic:clean_lines --tesseract=True
    samples = realistic_samples("pages")       # [{id, image, prompt, answer, family, font, tess_psm}]

A sample's image is a PIL image in its row's mode (ROW_MODE: "1", "L" or RGB), or, for the TIFF rows
(FILE_ROWS), the path of a file written under <base>/data/realistic/ROW/, so it reaches the model
through the same loader (image_process.load_image) a user's file does.

Every image is a pure function of (seed, row, index): random.Random(f"realistic:{seed}:{row}:{i}"),
fonts from nanoocr/fonts/ (identical files everywhere), degradations in numpy/PIL only (no cv2, whose
resamplers differ between builds). The answer is exactly the drawn text, one line of the image per
line of the answer, no surrounding spaces; a blank gap between paragraphs is not a line of text, so
it is not an empty answer line either (a line reader has nothing to report there).
"""

import io
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nanoocr import synth
from nanoocr import synth_text as T
from nanoocr.common import get_base_dir
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.typefaces import bold_sibling, font_covers, get_font, upright_styles
from tasks import scans

# The CPU recipe trains on TRAIN_FAMILIES (presets/cpu.toml names exactly these); HELD_OUT_FAMILIES are
# never drawn in training, so unseen_fonts (and tasks/prose.py) measure reading, not memorised shapes.
TRAIN_FAMILIES = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "Liberation Sans", "Liberation Serif",
                  "Liberation Mono", "Liberation Sans Narrow", "FreeSans", "FreeSerif", "FreeMono", "Nimbus Roman",
                  "Nimbus Sans", "Nimbus Mono PS", "Nimbus Sans Narrow", "C059", "EB Garamond")
HELD_OUT_FAMILIES = ("Carlito", "P052", "URW Bookman", "URW Gothic", "Courier Prime")

ROWS = ("clean_lines", "degraded_lines", "unseen_fonts", "paragraphs", "pages", "photos", "symbols",
        "bilevel_lines", "bilevel_pages", "tiff_pages", "fax_pages", "grey_scans", "colour_scans", "pencil_lines",
        "columns", "turned")
SIZES = {"clean_lines": 48, "degraded_lines": 48, "unseen_fonts": 48, "paragraphs": 24, "pages": 8, "photos": 8,
         "symbols": 8, "bilevel_lines": 48, "bilevel_pages": 8, "tiff_pages": 8, "fax_pages": 8, "grey_scans": 8,
         "colour_scans": 8, "pencil_lines": 48, "columns": 8, "turned": 12}  # small, so a CPU eval of every
# row takes minutes, not hours
# Tesseract's page segmentation: 7 = "treat the image as a single text line", 6 = "a single uniform
# block of text" (its auto mode 3 sometimes drops a one-line crop as noise); TESS_PSM: rows that need
# more, 3 = automatic page segmentation (finds columns), 1 = the same with orientation detection (OSD)
LINE_ROWS = ("clean_lines", "degraded_lines", "unseen_fonts", "bilevel_lines", "pencil_lines")
TESS_PSM = {"columns": 3, "turned": 1}
# The PIL mode of a row's images (RGB unless named here): a scanner's bilevel or greyscale output is
# handed over as it is, and image_process.load_image converts it, as it does a user's file.
ROW_MODE = {"bilevel_lines": "1", "bilevel_pages": "1", "grey_scans": "L"}
# Rows whose samples are files on disk (row -> file extension): the image is their path.
FILE_ROWS = {"tiff_pages": "tif", "fax_pages": "tif"}

# Symbols row: the characters users' scans lose, and real words that carry the accents (made-up
# accented words would test the language model's guessing, not the reading of a diacritic).
SYMBOL_CHARS = "$%@{}[]<>«»„”“"
ACCENT_CHARS = "éèêëàâäçñöüßÅøÉÀÇÑÖÜáíóúåæœïîôûÿ"
ACCENT_WORDS = ("café", "crème", "brûlée", "façade", "señor", "Köln", "über", "Straße", "Ångström", "København",
                "smørbrød", "élève", "fête", "Noël", "déjà", "château", "garçon", "mañana", "Zürich", "Göteborg",
                "naïve", "Ærø", "hôtel", "Málaga", "São", "Åland", "Bjørn", "Müller", "Éire", "À", "Ça", "Ñandú",
                "Öl", "Übung", "cœur", "piñata", "Genève", "Besançon", "Düsseldorf", "Peñalver", "Tromsø", "cañón")


# The kinds of symbol token: prices, percentages, addresses, brackets, quotes, tags.
SYMBOL_TOKENS = (
    lambda rng: f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
    lambda rng: f"{rng.randint(1, 100)}%",
    lambda rng: f"{T.word(rng)}@{T.word(rng)}.{rng.choice(('com', 'org', 'de', 'fr'))}",
    lambda rng: "{" + T.word(rng) + "}",
    lambda rng: f"[{rng.randint(1, 60)}]",
    lambda rng: f"<{T.word(rng)}>",
    lambda rng: f"«{T.word(rng)}»",
    lambda rng: f"„{T.word(rng)}”",
    lambda rng: f"“{T.word(rng)}”",
)


def _symbol_tokens(rng):
    """One token that carries symbols (a kind of SYMBOL_TOKENS) or accents (one of ACCENT_WORDS)."""
    k = rng.randrange(2 * len(SYMBOL_TOKENS))  # half the tokens symbols, half accented words
    return SYMBOL_TOKENS[k](rng) if k < len(SYMBOL_TOKENS) else rng.choice(ACCENT_WORDS)


# -----------------------------------------------------------------------------
# Fonts

def _pick_font(rng, families):
    family = rng.choice(families)
    return family, rng.choice(upright_styles(family))


# -----------------------------------------------------------------------------
# Text (the test split only: no answer here was a training target)

def _sentence(rng, mix=(("prose", 0.7), ("random", 0.2), ("entity", 0.1))):
    """One test-split text unit, whitespace normalised (a unit is one line's worth or more)."""
    src = rng.choices([m[0] for m in mix], weights=[m[1] for m in mix])[0]
    return " ".join(T.pick_text(rng, "test", lambda: T.SOURCES[src](rng)).split())


def _line_text(rng, lo=3, hi=10):
    """3-10 words cut from a run of prose / random / entity text: lines of a crop start and end
    mid-sentence. pick_text keeps only windows whose own hash is in the test split, as the renderer
    does for its line strips."""
    def make():
        k = rng.randint(lo, hi)
        words = []
        while len(words) < k:
            words += _sentence(rng).split()
        i = rng.randint(0, len(words) - k)
        return " ".join(words[i:i + k])
    return T.pick_text(rng, "test", make)


def _wrap(words, font, width):
    """Greedy wrap of words into lines no wider than width pixels (a word longer than the line
    gets a line of its own)."""
    lines, cur = [], []
    for w in words:
        if cur and font.getlength(" ".join(cur + [w])) > width:
            lines.append(" ".join(cur))
            cur = []
        cur.append(w)
    if cur:
        lines.append(" ".join(cur))
    return lines


# -----------------------------------------------------------------------------
# Drawing

def _paper(rng):
    """Near-white paper with a faint tint, near-black ink."""
    base = rng.randint(236, 252)
    paper = tuple(min(255, base + rng.randint(0, 3)) for _ in range(3))
    ink = tuple([rng.randint(0, 45)] * 3)
    return paper, ink


def draw_line_crop(text, font, rng, margin=(2, 8)):
    """A tight crop of one line: the ink box plus 2-8 px on every side (what a user crops)."""
    paper, ink = _paper(rng)
    l, t, r, b = font.getbbox(text)
    mx, my = rng.randint(*margin), rng.randint(*margin)
    img = Image.new("RGB", (r - l + 2 * mx, b - t + 2 * my), paper)
    ImageDraw.Draw(img).text((mx - l, my - t), text, font=font, fill=ink)
    return img, paper


def draw_block(lines, font, rng, margin, pitch, title=None, title_font=None, gaps=(), width=None, min_height=0):
    """Lines of text top-down on paper. title (if any) in title_font above them; gaps: indices of
    lines that start a new paragraph (a half line of extra space before them). Every line starts at
    the left margin, so the answer line is exactly the drawn string."""
    paper, ink = _paper(rng)
    _, top, _, _ = font.getbbox("ÅÉÀ[]{}|")  # tallest glyphs: the first line's ink stays in the margin
    rows, y = [], margin - min(0, top)
    if title:
        tl, tt, tr, tb = title_font.getbbox(title)
        rows.append((y - tt, title, title_font))
        y += (tb - tt) + pitch
    for i, line in enumerate(lines):
        if i in gaps:
            y += pitch // 2
        rows.append((y, line, font))
        y += pitch
    text_w = max(f.getbbox(s)[2] for _, s, f in rows)
    W = max(width or 0, text_w + 2 * margin)
    H = max(min_height, y - pitch + font.getbbox("gjpqy|")[3] + margin)
    img = Image.new("RGB", (W, H), paper)
    d = ImageDraw.Draw(img)
    for yy, s, f in rows:
        d.text((margin, yy), s, font=f, fill=ink)
    return img, paper


# -----------------------------------------------------------------------------
# Degradations (numpy / PIL only)

def jpeg(img, quality):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def salt_pepper(img, rng, frac):
    a = np.array(img)
    nrng = np.random.default_rng(rng.randrange(1 << 32))
    u = nrng.random(a.shape[:2])
    a[u < frac / 2] = 0
    a[(u >= frac / 2) & (u < frac)] = 255
    return Image.fromarray(a)


def degrade_line(img, paper, rng):
    """Rotation ±2.5°, gaussian blur sigma 0.4-1.2, 0.2-1% salt and pepper, JPEG 25-55. Each applies
    with p=0.85 and at least three of the four do (all or most, as real scans have)."""
    on = [rng.random() < 0.85 for _ in range(4)]
    while sum(on) < 3:
        on[rng.randrange(4)] = True
    if on[0]:
        img = img.rotate(rng.uniform(-2.5, 2.5), resample=Image.BICUBIC, expand=True, fillcolor=paper)
    if on[1]:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    if on[2]:
        img = salt_pepper(img, rng, rng.uniform(0.002, 0.01))
    if on[3]:
        img = jpeg(img, rng.randint(25, 55))
    return img


def perspective_coeffs(dst, src):
    """PIL's 8 PERSPECTIVE coefficients mapping output points dst[i] to input points src[i]."""
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(A, float), np.array(b, float)).tolist()


def light_field(rng, W, H, darkest):
    """A smooth multiplicative illumination field in [darkest, 1]: a 3x3 grid of random levels
    upsampled bicubically (a lamp's falloff and a hand's shadow), plus a linear gradient."""
    nrng = np.random.default_rng(rng.randrange(1 << 32))
    grid = Image.fromarray((nrng.random((3, 3)) * 255).astype(np.uint8), "L")
    f = np.asarray(grid.resize((W, H), Image.BICUBIC), np.float32) / 255
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    f = f + 1.5 * (np.cos(ang) * xx / W + np.sin(ang) * yy / H)
    f = (f - f.min()) / max(1e-6, f.max() - f.min())
    return darkest + (1 - darkest) * f


def photograph(page, rng):
    """A printed page as a phone sees it: on a table, tilted (perspective: corners moved by up to 6%),
    unevenly lit (darkest 0.3-0.55 of brightest), colour-cast, out of focus, with sensor noise,
    JPEG-compressed. Harsher than a scan: Tesseract's CER here is several times its clean-page CER.
    -> (photo, the page's corners in it: float [4, 2], top-left, top-right, bottom-right, bottom-left;
    a corner the tilt pushed out of the frame lies outside the image, which is what a page finder
    that crops at the page's outline has to recover)."""
    pw, ph = page.size
    bx, by = round(pw * rng.uniform(0.04, 0.08)), round(ph * rng.uniform(0.04, 0.08))
    table = tuple(int(c * rng.uniform(0.35, 0.6)) for c in (rng.randint(150, 200), rng.randint(120, 170), rng.randint(90, 140)))
    W, H = pw + 2 * bx, ph + 2 * by
    canvas = Image.new("RGB", (W, H), table)
    canvas.paste(page, (bx, by))
    # move each corner of the source by up to 3% of the size: a slight tilt, text stays straight-ish
    jit = lambda n: rng.uniform(-0.06, 0.06) * n  # noqa: E731
    corners = [(0, 0), (W, 0), (W, H), (0, H)]
    src = [(x + jit(W), y + jit(H)) for x, y in corners]
    img = canvas.transform((W, H), Image.PERSPECTIVE, perspective_coeffs(corners, src), Image.BICUBIC, fillcolor=table)
    # the page's corners in the photo: the inverse map (canvas -> photo) applied to the pasted page's corners
    a, b, c, d, e, f, g, h = perspective_coeffs(src, corners)
    quad = np.array([((a * x + b * y + c) / (g * x + h * y + 1), (d * x + e * y + f) / (g * x + h * y + 1))
                     for x, y in [(bx, by), (bx + pw, by), (bx + pw, by + ph), (bx, by + ph)]])
    a = np.asarray(img, np.float32) * light_field(rng, W, H, rng.uniform(0.3, 0.55))[..., None]
    cast = np.array([rng.uniform(0.9, 1.08), rng.uniform(0.92, 1.04), rng.uniform(0.8, 1.0)], np.float32)  # warm lamp
    a = a * cast + np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(3, 9), a.shape)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.3)))
    return jpeg(img, rng.randint(35, 70)), quad


# -----------------------------------------------------------------------------
# Rows: (rng) -> (image, answer lines, family, font name)

def _line_sample(rng, families, degrade=False):
    family, spec = _pick_font(rng, families)
    font = get_font(spec.name, rng.randint(16, 40))
    text = _line_text(rng)
    img, paper = draw_line_crop(text, font, rng)
    if degrade:
        img = degrade_line(img, paper, rng)
    return img, [text], family, spec.name


def _prose_words(rng, n_chars):
    words = []
    while len(" ".join(words)) < n_chars:
        words += _sentence(rng).split()
    return words


def _paragraph(rng):
    family, spec = _pick_font(rng, TRAIN_FAMILIES)
    font = get_font(spec.name, rng.randint(16, 28))
    width = round(font.size * rng.uniform(14, 26))  # 28-52 characters a line
    n = rng.randint(2, 5)
    lines = _wrap(_prose_words(rng, n * width // font.size * 3), font, width)[:n]
    img, _ = draw_block(lines, font, rng, margin=rng.randint(4, 16), pitch=round(font.size * rng.uniform(1.2, 1.6)))
    return img, lines, family, spec.name


def _page_lines(rng, font, width, n_lines):
    """n_lines lines of wrapped paragraphs (2-6 lines each) -> (lines, indices starting a paragraph)."""
    lines, gaps = [], set()
    while len(lines) < n_lines:
        if lines:
            gaps.add(len(lines))
        para = _wrap(_prose_words(rng, rng.randint(120, 400)), font, width)
        lines += para[:n_lines - len(lines)]
    return lines, gaps


def _title(rng):
    words = _sentence(rng, mix=(("prose", 1.0),)).rstrip(".?!:").split()[:rng.randint(2, 6)]
    return " ".join(words).rstrip(",;:")


def _page(rng, n_lines=None, px=(16, 24), width=(560, 900), margin=(30, 70)):
    family, spec = _pick_font(rng, TRAIN_FAMILIES)
    font = get_font(spec.name, rng.randint(*px))
    margin = rng.randint(*margin)
    W = rng.randint(*width)
    lines, gaps = _page_lines(rng, font, W - 2 * margin, n_lines or rng.randint(10, 20))
    title = tfont = None
    if rng.random() < 0.5:
        title, tfont = _title(rng), get_font(bold_sibling(spec).name, round(font.size * rng.uniform(1.3, 1.8)))
    img, paper = draw_block(lines, font, rng, margin, round(font.size * rng.uniform(1.25, 1.6)), title, tfont, gaps,
                            width=W, min_height=round(W * 1.3))
    return img, ([title] if title else []) + lines, family, spec.name, tfont


def _photo(rng):
    """~300 characters: a short page, photographed. -> (image, lines, family, font name, the page's corners)."""
    family, spec = _pick_font(rng, TRAIN_FAMILIES)
    font = get_font(spec.name, rng.randint(14, 22))
    margin = rng.randint(24, 48)
    W = rng.randint(480, 640)
    words = _prose_words(rng, 300)
    lines = _wrap(words, font, W - 2 * margin)
    k = min(range(1, len(lines) + 1), key=lambda k: abs(len("\n".join(lines[:k])) - 300))
    lines = lines[:k]  # the whole lines closest to 300 characters
    page, _ = draw_block(lines, font, rng, margin, round(font.size * rng.uniform(1.3, 1.6)), width=W)
    img, corners = photograph(page, rng)
    return img, lines, family, spec.name, corners


def _symbol_line(rng, spec, font, width):
    """A line of test-split prose with symbol / accent tokens mixed in, cut to the column width;
    only tokens the font draws."""
    words = _sentence(rng, mix=(("prose", 1.0),)).split()
    n_sym = rng.randint(3, 5)
    for _ in range(n_sym):
        for _ in range(20):
            tok = _symbol_tokens(rng)
            if font_covers(spec.name, tok):
                words.insert(rng.randint(0, len(words)), tok)
                break
    line = _wrap(words, font, width)[0]
    return line


def _symbols(rng):
    # families whose upright style draws every symbol and accent (all of them but a few do)
    fams = [f for f in TRAIN_FAMILIES if font_covers(upright_styles(f)[0].name, SYMBOL_CHARS + "éèêëàâäçñöüßÅø")]
    family, spec = _pick_font(rng, fams)
    font = get_font(spec.name, rng.randint(16, 24))
    margin = rng.randint(30, 60)
    W = rng.randint(640, 900)
    lines = [_symbol_line(rng, spec, font, W - 2 * margin) for _ in range(12)]
    img, _ = draw_block(lines, font, rng, margin, round(font.size * rng.uniform(1.3, 1.6)), width=W)
    return img, lines, family, spec.name


def _print_px(rng, dpi):
    """Body text of 9-12 pt printed and scanned at dpi -> its font size in pixels."""
    return round(rng.uniform(9, 12) * dpi / 72)


def _scan_page(rng, dpi, width=None, margin=None):
    """A clean page of 10-20 lines set in 9-12 pt and scanned at dpi: its column 28-38 ems wide (a
    book's or a letter's measure) and its margins 1/6-1/3 inch of the crop, unless given in pixels."""
    px = _print_px(rng, dpi)
    width = width or (round(px * 28), round(px * 38))
    margin = margin or (round(dpi / 6), round(dpi / 3))
    return _page(rng, px=(px, px), width=width, margin=margin)[:4]


# Paper tints of colour scans (office, recycled and coloured copy paper; each channel jittered by 8) and inks.
TINTS = ((248, 238, 205), (250, 240, 170), (215, 228, 245), (248, 218, 225), (220, 240, 215), (228, 222, 205))
INKS = ((20, 20, 25), (25, 35, 90), (60, 40, 25))


def _bilevel_line(rng):
    family, spec = _pick_font(rng, TRAIN_FAMILIES)
    font = get_font(spec.name, _print_px(rng, rng.randint(200, 300)))
    text = _line_text(rng)
    img, _ = draw_line_crop(text, font, rng, margin=(4, 16))
    return scans.bilevel(img, rng, max_tilt=1.0), [text], family, spec.name


def _bilevel_page(rng):
    img, lines, family, font = _scan_page(rng, rng.randint(200, 300))
    return scans.bilevel(img, rng, max_tilt=1.5), lines, family, font


def _tiff_page(rng, path):
    dpi = rng.randint(200, 300)
    img, lines, family, font = _scan_page(rng, dpi)
    img = scans.bilevel(img, rng, max_tilt=1.5)
    return scans.write_tiff(img, path, rng.choice(("raw", "packbits", "tiff_lzw")), (dpi, dpi)), lines, family, font


def _fax_page(rng, path):
    """A letter sent by fax in fine mode and stored as the receiving machine does: 1728 px across the
    A4 width at 204 dpi (196 lines per inch down: the 4% stretch is not drawn), 1-inch margins, fed up
    to 2 degrees crooked, always specked."""
    img, lines, family, font = _scan_page(rng, 200, width=(1728, 1728), margin=(160, 220))
    img = scans.bilevel(img, rng, max_tilt=2.0, speckle_p=1.0)
    return scans.write_tiff(img, path, "group4", (204, 196)), lines, family, font


def _grey_scan(rng):
    img, lines, family, font = _scan_page(rng, rng.randint(150, 300))
    g = rng.randint(200, 240)
    img = scans.recolour(img, (g,) * 3, (rng.randint(15, 70),) * 3)
    return scans.scanned(img, rng, (g,) * 3, grey=True), lines, family, font


def _colour_scan(rng):
    img, lines, family, font = _scan_page(rng, rng.randint(150, 300))
    paper = tuple(min(255, c + rng.randint(-8, 8)) for c in rng.choice(TINTS))
    img = scans.recolour(img, paper, rng.choice(INKS))
    return scans.scanned(img, rng, paper), lines, family, font


def _pencil_line(rng):
    """A line crop as _line_sample draws it, reprinted in graphite grey on off-white paper (contrast
    ratio ink / paper 0.38-0.67, where clean print is ~0.1), then scanned in colour, tilted up to 1 degree."""
    family, spec = _pick_font(rng, TRAIN_FAMILIES)
    font = get_font(spec.name, rng.randint(16, 40))
    text = _line_text(rng)
    img, _ = draw_line_crop(text, font, rng)
    p = rng.randint(225, 250)
    paper = (p, p, max(0, p - rng.randint(0, 10)))  # off-white, slightly warm
    img = scans.recolour(img, paper, (rng.randint(95, 150),) * 3)
    return scans.scanned(img, rng, paper, max_tilt=1.0, jpeg_p=0.3), [text], family, spec.name


def _columns(rng, i):
    """The renderer's page kind (synth.layout_page, test split and test degradations, 1024x1024) in
    2 columns for even i and 3 for odd, one book-weight upright font of TRAIN_FAMILIES; its blank
    lines between paragraphs are left out of the answer (no line of text there)."""
    family, spec = _pick_font(rng, TRAIN_FAMILIES)
    img, _, answer = synth.render(rng.randrange(1 << 24), rng.randrange(1 << 36), "page", "test",
                                  columns=2 + i % 2, fonts=[spec.name])
    return img, [line for line in answer.split("\n") if line.strip()], family, spec.name


# a page turned k degrees clockwise (PIL's ROTATE_n turns counter-clockwise)
TURNS = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


def _turned(rng):
    """A "pages" page, then turned by 90, 180 or 270 degrees clockwise (rng's choice) ->
    (image, lines, family, font name, degrees, the page upright)."""
    page, lines, family, font = _page(rng)[:4]
    k = rng.choice(sorted(TURNS))
    return page.transpose(TURNS[k]), lines, family, font, k, page


def _make(row, rng, path=None, i=0):
    if row == "clean_lines":
        return _line_sample(rng, TRAIN_FAMILIES)
    if row == "degraded_lines":
        return _line_sample(rng, TRAIN_FAMILIES, degrade=True)
    if row == "unseen_fonts":
        return _line_sample(rng, HELD_OUT_FAMILIES)
    if row == "paragraphs":
        return _paragraph(rng)
    if row == "pages":
        return _page(rng)[:4]
    if row == "photos":
        return _photo(rng)[:4]
    if row == "symbols":
        return _symbols(rng)
    if row == "bilevel_lines":
        return _bilevel_line(rng)
    if row == "bilevel_pages":
        return _bilevel_page(rng)
    if row == "tiff_pages":
        return _tiff_page(rng, path)
    if row == "fax_pages":
        return _fax_page(rng, path)
    if row == "grey_scans":
        return _grey_scan(rng)
    if row == "colour_scans":
        return _colour_scan(rng)
    if row == "pencil_lines":
        return _pencil_line(rng)
    if row == "columns":
        return _columns(rng, i)
    if row == "turned":
        return _turned(rng)[:4]
    raise ValueError(f"realistic: unknown row {row!r}; rows: {', '.join(ROWS)}")


def row_families(row):
    """The families a row draws from."""
    return HELD_OUT_FAMILIES if row == "unseen_fonts" else TRAIN_FAMILIES


def row_file(row, i, seed=0):
    """Where sample i of a FILE_ROWS row is written: <base>/data/realistic/ROW/SEED-I.EXT."""
    return os.path.join(get_base_dir(), "data", "realistic", row, f"{seed}-{i}.{FILE_ROWS[row]}")


def _rng(seed, row, i):
    return random.Random(f"realistic:{seed}:{row}:{i}")


def photo_corners(i, seed=0):
    """The page's true corners (float [4, 2]: top-left, top-right, bottom-right, bottom-left, possibly
    outside the frame) in realistic_samples("photos", seed=seed)[i]["image"]: what a page finder is
    tested against."""
    return _photo(_rng(seed, "photos", i))[4]


def turned_page(i, seed=0):
    """(degrees, the page upright) for realistic_samples("turned", seed=seed)[i]: how far its image is
    turned clockwise and the page it was turned from (what a reader that turns it back must see)."""
    return _turned(_rng(seed, "turned", i))[4:]


def realistic_samples(row, limit=-1, seed=0):
    """[{id, image, prompt, answer, family, font, tess_psm}] for one row of ROWS: SIZES[row] images
    (at most limit), each a pure function of (seed, row, index). image: a PIL image in ROW_MODE's
    mode, or for FILE_ROWS the path of the file, (re)written on every call (cheap, and a stale or
    half-written file from an older version can never be read instead)."""
    if row not in ROWS:
        raise ValueError(f"realistic: unknown row {row!r}; rows: {', '.join(ROWS)}")
    n = SIZES[row] if limit <= 0 else min(limit, SIZES[row])
    out = []
    for i in range(n):
        img, lines, family, font_name = _make(row, _rng(seed, row, i), row_file(row, i, seed) if row in FILE_ROWS else None, i)
        lines = [line.strip() for line in lines]
        assert all(lines), f"realistic {row} #{i}: an empty line"
        assert isinstance(img, str) if row in FILE_ROWS else img.mode == ROW_MODE.get(row, "RGB"), \
            f"tasks/realistic.py: row {row} #{i} made a {getattr(img, 'mode', type(img).__name__)} image; ROW_MODE / FILE_ROWS say otherwise"
        out.append({"id": f"realistic-{row}-{i}", "image": img, "prompt": DEFAULT_PROMPT,
                    "answer": "\n".join(lines), "family": family, "font": font_name,
                    "tess_psm": TESS_PSM.get(row, 7 if row in LINE_ROWS else 6)})
    return out
