"""
The fonts the renderer draws: the files shipped in nanoocr/fonts/ (never the machine's own), which
of them draw Latin text (coverage and shape checks), their names and families, the choice of one
per sample, and a manifest of file hashes so two machines' runs can be compared file for file.
nanoocr/synth.py draws with them; tasks/realistic.py and tasks/prose.py pick families' upright
styles (upright_styles) and check a text's glyphs (font_covers) here.
"""

import functools
import glob
import hashlib
import os
from collections import namedtuple

from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from nanoocr import synth_text as T

FontSpec = namedtuple("FontSpec", "name path index family style mono covers")
_NOTDEF = "\U0010fffd"  # a private-use code point no text font maps: renders the .notdef glyph


def _load(path, index, size):
    # BASIC layout: identical pixels whether or not libraqm is installed, and faster
    return ImageFont.truetype(path, size, index=index, layout_engine=ImageFont.Layout.BASIC)


def _coverage(font):
    """The characters of CORE_CHARS + EXTRA_CHARS this font draws with a real glyph: one that has
    ink and differs from .notdef (the tofu box). Pillow cannot ask the cmap directly."""
    def sig(ch):
        m = font.getmask(ch)
        return (m.size, bytes(m)) if m.getbbox() else None  # None: draws nothing
    notdef = sig(_NOTDEF)
    return {" "} | {c for c in T.CORE_CHARS + T.EXTRA_CHARS if c != " " and sig(c) not in (None, notdef)}


def _ink_box(font, ch):
    """Tight ink box of one character relative to its baseline origin (getbbox is not tight: it
    also spans the pen origin and the baseline)."""
    s = font.size
    im = Image.new("L", (4 * s, 4 * s), 0)
    ImageDraw.Draw(im).text((s, 3 * s), ch, font=font, fill=255, anchor="ls")
    b = im.getbbox() or (s, 3 * s, s, 3 * s)
    return b[0] - s, b[1] - 3 * s, b[2] - s, b[3] - 3 * s


def _looks_latin(font):
    """Symbol and dingbat fonts map ASCII code points to other shapes (Standard Symbols draws 'h' as
    eta, Dingbats draws '.' as an ornament), so coverage alone does not catch them. Real Latin text
    fonts have: ascender on 'h' and 'd', descender on 'p', a small '.', a flat '-'."""
    bb = {c: _ink_box(font, c) for c in "xhdpH.-"}
    xh = -bb["x"][1]
    area = lambda b: max(0, b[2] - b[0]) * max(0, b[3] - b[1])  # noqa: E731
    return (xh > 0 and bb["h"][1] < -1.15 * xh and bb["d"][1] < -1.15 * xh and bb["p"][3] > 0.15 * xh
            and area(bb["."]) < 0.15 * area(bb["H"]) and (bb["-"][3] - bb["-"][1]) < 0.35 * (bb["H"][3] - bb["H"][1]))


FONT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fonts")


def _names(path):
    """(family, style) from the font's name table: typographic names (ids 16/17) where present,
    else the legacy ones. Pillow's getname() misreports some (Courier Prime Bold says 'Light')."""
    with TTFont(path, lazy=True) as tt:
        name = tt["name"]
        return name.getBestFamilyName(), name.getBestSubFamilyName()


@functools.lru_cache(maxsize=1)
def list_fonts():
    """Every font the renderer may draw: the files shipped in nanoocr/fonts/ (one folder per source
    package, each with its licence; README.md there lists them), each checked to render all of
    printable ASCII as Latin letters. Never the machine's own fonts: the same command must render
    the same pixels on every machine, and a machine with fewer fonts must not silently train on a
    different data set. Sorted by file name, which is the font's name everywhere."""
    fonts = []
    for path in sorted(glob.glob(os.path.join(FONT_DIR, "*", "*.[ot]tf")), key=os.path.basename):
        try:
            font = _load(path, 0, 32)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"shipped font {path} is unreadable ({e}): reinstall nanoocr") from e
        family, style = _names(path)
        mono = font.getlength("i") == font.getlength("W")
        covers = _coverage(font)
        if set(T.CORE_CHARS) <= covers and _looks_latin(font):
            fonts.append(FontSpec(os.path.basename(path), path, 0, family, style, mono, frozenset(covers)))
    if not fonts:
        raise RuntimeError(f"no usable font in {FONT_DIR}: the package's font files are missing; reinstall "
                           "nanoocr (pip install .) or check out the repository again")
    return fonts


@functools.lru_cache(maxsize=128)
def get_font(name, size):
    """An ImageFont for (font name from list_fonts(), pixel size). Loading takes ~0.1 ms but each
    object holds ~150 KB, so few are kept; what is costly to measure is cached by (name, size)
    below (font.key), not by font object, so evicted fonts are not kept alive."""
    spec = font_index()[name]
    font = _load(spec.path, spec.index, int(size))
    font.key = (name, int(size))
    return font


@functools.lru_cache(maxsize=1)
def font_index():
    """{font name: FontSpec} of list_fonts()."""
    return {f.name: f for f in list_fonts()}


def check_fonts(fonts_filter):
    """Raise a ValueError naming every entry of fonts_filter (font file names or family names) that
    matches no shipped font, with the families there are. Training calls it at start-up: a preset
    that names a missing family stops, it never draws from the rest."""
    fonts = list_fonts()
    missing = [s for s in fonts_filter if not any(s in (f.name, f.family) for f in fonts)]
    if missing:
        raise ValueError(f"font(s) {missing} are not among the shipped fonts; families: "
                         f"{sorted({f.family for f in fonts})} (font files live in {FONT_DIR})")


def font_manifest(fonts_filter=None):
    """[(file name, sha256 prefix)] of the font files fonts_filter selects (None = all): printed at
    start-up so two machines' runs can be compared file for file."""
    specs = [f for fam in _families(None if fonts_filter is None else tuple(fonts_filter)).values() for f in fam]
    out = []
    for f in sorted(specs, key=lambda f: f.name):
        with open(f.path, "rb") as fh:
            out.append((f.name, hashlib.sha256(fh.read()).hexdigest()[:12]))
    return out


@functools.lru_cache(maxsize=64)
def _families(fonts_filter):
    """family -> [FontSpec], optionally restricted to font file names / families in fonts_filter."""
    if fonts_filter is not None:
        check_fonts(fonts_filter)
    fams = {}
    for f in list_fonts():
        if fonts_filter is None or any(s in (f.name, f.family) for s in fonts_filter):
            fams.setdefault(f.family, []).append(f)
    return fams


def choose_font(rng, fonts_filter=None, mono_p=0.0):
    """A family uniformly (so a family with 16 styles is not 16x likelier), then one of its styles."""
    fams = _families(None if fonts_filter is None else tuple(fonts_filter))
    names = sorted(fams)
    if mono_p and rng.random() < mono_p:
        names = [n for n in names if fams[n][0].mono] or names
    return rng.choice(fams[rng.choice(names)])


def bold_sibling(spec):
    """The upright bold of spec's family (for titles and bold text), or spec itself if it has none."""
    for f in _families(None).get(spec.family, []):
        if "bold" in f.style.lower() and "italic" not in f.style.lower() and "oblique" not in f.style.lower():
            return f
    return spec


@functools.lru_cache(maxsize=None)
def _cmap(path):
    """The code points a font file maps to a glyph. FontSpec.covers only answers for the renderer's
    own character set; text beyond it (tasks/realistic.py's symbols row: « » „ and accents) needs
    the cmap itself."""
    with TTFont(path, lazy=True, fontNumber=0) as tt:
        return frozenset(tt.getBestCmap())


def font_covers(font_name, text):
    """True when the shipped font `font_name` (a file name from list_fonts()) has a glyph for every
    character of text (newlines aside)."""
    cmap = _cmap(font_index()[font_name].path)
    return all(ord(c) in cmap for c in text if c != "\n")


@functools.lru_cache(maxsize=None)
def upright_styles(family):
    """The book-weight upright styles of a family (what body text is set in), sorted by file name.
    Styles are judged by file name as well as the name table: Courier Prime's files all call
    themselves 'Light'. check_fonts raises ValueError for a family not shipped."""
    check_fonts([family])
    bad = ("bold", "italic", "oblique", "demi", "condensed", "extralight")
    styles = [f for f in list_fonts() if f.family == family
              and not any(b in f.style.lower() or b in f.name.lower() for b in bad)]
    assert styles, f"nanoocr/typefaces.py: family {family} ships no upright book style (nanoocr/fonts/)"
    return tuple(sorted(styles, key=lambda f: f.name))
