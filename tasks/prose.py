"""
Real prose in fonts the CPU recipe never trains on: a check that a model reads text, not the
renderer's quirks.

The renderer's "prose" is English-like but made up (nanoocr/synth_text.py), and the CPU preset draws
only tasks/realistic.py's TRAIN_FAMILIES. Here the text is real: opening passages of public-domain
books and speeches (ASCII punctuation, as typed), set in the HELD_OUT_FAMILIES (URW's clones of
Palatino, Bookman and Avant Garde, Carlito, Courier Prime) at natural sizes, wrapped into short
paragraphs on plain paper, exactly as one would photograph or screenshot them. The images are not
one-line strips: a strip model reads them through nanoocr/strips.py (lines, then word groups), as
`nanoocr read` does.

    nanoocr eval --data=prose                       # 8 passages x 5 fonts, cut into paragraphs
    samples = prose_samples()                       # [{id, image (PIL), prompt, answer, family}]

The answer keeps the paragraph's line breaks (the reader joins lines with newlines); CER is over
the whole text.
"""

import random
import textwrap

from PIL import Image, ImageDraw

from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.typefaces import get_font, upright_styles
from tasks.realistic import HELD_OUT_FAMILIES

PASSAGES = [
    # Dickens, A Tale of Two Cities (1859)
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness.",
    # Austen, Pride and Prejudice (1813)
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.",
    # Melville, Moby-Dick (1851)
    "Call me Ishmael. Some years ago - never mind how long precisely - having little or no money in my "
    "purse, and nothing particular to interest me on shore, I thought I would sail about a little and "
    "see the watery part of the world.",
    # Lincoln, the Gettysburg Address (1863)
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived "
    "in Liberty, and dedicated to the proposition that all men are created equal.",
    # Thoreau, Walden (1854)
    "I went to the woods because I wished to live deliberately, to front only the essential facts of "
    "life, and see if I could not learn what it had to teach, and not, when I came to die, discover "
    "that I had not lived.",
    # Darwin, On the Origin of Species (1859)
    "When on board H.M.S. Beagle, as naturalist, I was much struck with certain facts in the "
    "distribution of the inhabitants of South America, and in the geological relations of the present "
    "to the past inhabitants of that continent.",
    # Carroll, Alice's Adventures in Wonderland (1865)
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
    "to do: once or twice she had peeped into the book her sister was reading, but it had no pictures "
    "or conversations in it.",
    # Stevenson, Treasure Island (1883)
    "Squire Trelawney, Dr. Livesey, and the rest of these gentlemen having asked me to write down the "
    "whole particulars about Treasure Island, from the beginning to the end, keeping nothing back but "
    "the bearings of the island, I take up my pen in the year of grace 17-.",
]

# Families that no training recipe draws (tasks/realistic.py), each in its upright book style. All
# ship in nanoocr/fonts/, so a missing one is a broken install: check_fonts raises, nothing is skipped.
FONTS = list(HELD_OUT_FAMILIES)
SIZES = (18, 22, 26)            # font pixel sizes, drawn per sample
COLUMNS = (34, 44, 56)          # characters per line before wrapping, drawn per sample
MAX_LINES = 4                   # a passage longer than this is cut into several paragraphs


def _regular(family):
    """The upright book style of a shipped family (ValueError from typefaces.check_fonts if the family
    is not shipped). By file name too: Courier Prime's files all call their style 'Light'."""
    return upright_styles(family)[0]


def _paragraphs(text, columns):
    lines = textwrap.wrap(text, columns)
    return ["\n".join(lines[i:i + MAX_LINES]) for i in range(0, len(lines), MAX_LINES)]


def render_paragraph(text, font, rng):
    """Lines of text (newline-separated) -> an RGB image: the font at its size, 1.3-1.6 line
    spacing, margins of about one line, slightly tinted paper, near-black ink."""
    lines = text.split("\n")
    size = font.size
    pitch = round(size * rng.uniform(1.3, 1.6))
    margin = round(size * rng.uniform(0.6, 1.2))
    width = int(max(font.getlength(line) for line in lines)) + 2 * margin
    height = pitch * (len(lines) - 1) + round(size * 1.3) + 2 * margin
    paper = tuple(rng.randint(232, 255) for _ in range(3))
    ink = tuple([rng.randint(0, 60)] * 3)
    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * pitch), line, font=font, fill=ink)
    return img


def prose_samples(limit=-1, seed=0):
    """[{id, image, prompt, answer, family}]: every passage in every font of FONTS (size and
    column width drawn per pair), cut into paragraphs of at most MAX_LINES lines."""
    out = []
    specs = [(fam, _regular(fam)) for fam in FONTS]
    for pi, passage in enumerate(PASSAGES):
        for fam, spec in specs:
            rng = random.Random(f"prose:{seed}:{pi}:{fam}")
            font = get_font(spec.name, rng.choice(SIZES))
            for k, para in enumerate(_paragraphs(passage, rng.choice(COLUMNS))):
                out.append({"id": f"prose-{pi}-{fam.replace(' ', '_')}-{k}", "image": render_paragraph(para, font, rng),
                            "prompt": DEFAULT_PROMPT, "answer": para, "family": fam})
                if 0 < limit <= len(out):
                    return out
    return out
