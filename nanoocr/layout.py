"""
Page layout before lines: which way up a page is, and where its columns are.

strips.py finds text lines with a row profile (rows with ink, separated by blank rows). That works
on one upright column only: on a page turned by 90 degrees the "lines" it finds are slices across
every line, and on a two-column page each row runs through both columns, so their lines come out
merged side by side. This module runs first, on the cleaned ink mask (bool [h, w], True = ink):

  detect_orientation(ink) -> 0 / 90 / 180 / 270, the degrees the page is turned clockwise
      (np.rot90(a, k // 90), which turns counter-clockwise, sets it upright). Text lines pile their
      ink into a few rows, so the row profile of an upright or upside-down page is peaked and its
      column profile flat; turned by 90 degrees it is the other way round (a projection test, at
      the best of a few small tilts). Upright vs upside down (baseline_evidence): in Latin print
      nearly every letter stands on the baseline, while letters' tops split between the x-height
      and the ascender / capital line, so within a line bottoms agree far more than tops; turned
      by 180 degrees, tops agree more. orientation(ink) also says whether that up / down answer is
      sure: on pages of small or light print the evidence can be too weak either way, and a
      reader with a model settles it by reading a few lines both ways (reader.settle_turn).
  find_columns(ink) -> [(x0, y0, x1, y1)] column regions in reading order: a recursive XY-cut.
      A region splits at a gutter (a blank vertical band wider than word gaps, with a column of
      text on each side: several lines, left-aligned, filling its width, of several words; left
      before right), or at its wide blank rows when one of the bands then splits at a gutter (a
      heading above columns is read first); top before bottom.

Both are pure functions of the mask and decide only on clear evidence: a one-line crop, a blank
image, or a page whose evidence is weak keeps orientation 0, and an image without a gutter is one
region, the whole mask, so single-column pages are cut exactly as before. Tables and receipts
(label ... amount) are read row by row as before: their columns are ragged, right-aligned or one
number a row, which the column test rejects. This is classic geometry, not a learned layout
model: no vertical text, no text wrapped around figures, no columns that start mid-page without
a blank band above them; the half-turn test needs Latin-like print (a page of capitals or
digits alone stays as it is), and thin strokes that break into fragments give it no evidence.
"""

import cv2
import numpy as np

GUTTER = 1.3      # a gutter is blank for at least this many units (glyph_unit, ~0.6-0.75 em): word
                  # gaps are 0.25-0.35 em (monospaced ~0.6 em), column gaps ~1 em or more
MIN_COL = 6       # a column is at least this many units wide (~3 em: 6+ characters a line)
MIN_LINES = 5     # lines each side of a gutter must hold: in a short paragraph (monospaced above all) word
                  # gaps line up by chance
MIN_FILL = 0.6    # median line width / column width each side of a gutter must reach
MIN_ALIGNED = 0.6 # fraction of its lines that start at a column's left edge (indented first lines do not)
MIN_WORDS = 1.2   # mean word groups per line each side of a gutter must reach: a text column's lines
                  # hold words, a receipt's amount column one number a row
BAND_GAP = 1.5    # a region cuts into bands at blank rows this many times its median line gap (and >= 1 unit)
MIN_ORIENT_LINES = 3  # lines a page needs before its orientation is judged (a one-line crop is not turned)
LINE_ASPECT = 5   # ... each at least this many line pitches long
PEAK_RATIO = 1.15 # the peaked profile must beat the other by this factor to call lines horizontal / vertical
MIN_ASYM = 0.05   # a page is upside down when baseline_evidence is below -MIN_ASYM (upright print:
                  # 0.1-0.35 on the renderer's pages and the realistic rows) ...
MIN_AGREE = 0.6   # ... the letters of at least this fraction of lines agree ...
MIN_LETTERS = 60  # ... and there are at least this many letters to go by ...
MIN_LETTERS_PER_LINE = 8  # ... and this many per line: where letters run together into a few blobs a
                          # line (a heavy or connected face), their tops and bottoms say nothing
SLICE = 12        # slices of a page that baseline_evidence takes lines from are this many letter heights wide


def runs(flags):
    """[(start, end)] of the runs of True in a 1-D bool array (end exclusive)."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    d = np.flatnonzero(f[1:] != f[:-1])
    return list(zip(d[0::2].tolist(), d[1::2].tolist()))


def glyph_unit(ink):
    """The typical height of a letter in the mask (~0.6-0.75 em), or None with fewer than 8
    components: the scale every threshold here is measured in, so they hold at any dpi. Thin
    strokes break into fragments under a threshold, so the ink is closed 3x3 first, and the median
    is weighted by area so dots, commas and fragments do not pull it down."""
    m = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n < 9:
        return None
    h, area = stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(h)
    return float(h[order][np.searchsorted(np.cumsum(area[order]), area.sum() / 2)])


def _tight(ink, box):
    """The box shrunk to the ink inside it (None if it holds none)."""
    x0, y0, x1, y1 = box
    sub = ink[y0:y1, x0:x1]
    rows, cols = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
    if not len(rows):
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def _crop(ink, box):
    """The mask inside a box (x0, y0, x1, y1)."""
    return ink[box[1]:box[3], box[0]:box[2]]


def _text_lines(sub, unit):
    """Row runs of a region at least half a unit tall: its lines, roughly (touching lines count once)."""
    return [(t, b) for t, b in runs(sub.any(1)) if b - t >= 0.5 * unit]


def _is_column(sub, unit):
    """Does this side of a candidate gutter look like a column of text: wide enough, at
    least MIN_LINES lines, most of them starting at its left edge and filling its width (wrapped
    text does; a table's labels and right-aligned amounts do not), of several words (a receipt's
    amount column is one number a row). A word gap is a blank between ink runs more than
    twice the side's median blank (the letter gaps) and over 0.3 units."""
    box = _tight(sub, (0, 0, sub.shape[1], sub.shape[0]))
    if box is None or box[2] - box[0] < MIN_COL * unit:
        return False
    lines = _text_lines(sub, unit)
    if len(lines) < MIN_LINES:
        return False
    gaps, fill, starts = [], [], []
    for t, b in lines:
        segs = runs(sub[t:b].any(0))
        gaps.append([segs[i + 1][0] - segs[i][1] for i in range(len(segs) - 1)])
        fill.append((segs[-1][1] - segs[0][0]) / (box[2] - box[0]))
        starts.append(segs[0][0] - box[0])
    if float(np.median(fill)) < MIN_FILL:  # a table's label column: ragged, not wrapped text
        return False
    if np.mean(np.asarray(starts) <= 0.5 * unit) < MIN_ALIGNED:  # right-aligned amounts, centred lines
        return False
    flat = [g for gs in gaps for g in gs]
    if not flat:
        return False
    word = max(2 * float(np.median(flat)), 0.3 * unit)
    return float(np.mean([1 + sum(g > word for g in gs) for gs in gaps])) >= MIN_WORDS


def _gutter(ink, box, unit):
    """(left box, right box) split at the widest valid gutter of the region, or None. A candidate
    (a blank band over GUTTER units wide, inside the ink) is valid when the ink between it and
    its neighbouring candidates (the column just left of it and just right of it) looks like text
    columns: the sides' own lines, since a side holding two columns whose lines are offset has no
    blank rows between them."""
    x0, y0, x1, y1 = box
    sub = ink[y0:y1, x0:x1]
    # a few inked pixels in a column (a speck, a serif touching across) do not close a gutter
    blank = sub.sum(0) <= max(1, unit // 3)
    cands = [(a, b) for a, b in runs(blank) if a > 0 and b < sub.shape[1] and b - a >= GUTTER * unit]
    edges = [0] + [e for ab in cands for e in ab] + [sub.shape[1]]
    ok = [(b - a, a, b) for j, (a, b) in enumerate(cands)
          if _is_column(sub[:, edges[2 * j]:a], unit) and _is_column(sub[:, b:edges[2 * j + 3]], unit)]
    if not ok:
        return None
    _, a, b = max(ok)
    return _tight(ink, (x0, y0, x0 + a, y1)), _tight(ink, (x0 + b, y0, x1, y1))


def _bands(ink, box, unit):
    """The region cut at its wide blank rows (wider than BAND_GAP x its median gap between lines,
    and than one unit): a title, a section break. [box] when there are none."""
    x0, y0, x1, y1 = box
    rows = runs(ink[y0:y1, x0:x1].any(1))
    gaps = [rows[i + 1][0] - rows[i][1] for i in range(len(rows) - 1)]
    if not gaps:
        return [box]
    thr = max(unit, BAND_GAP * float(np.median(gaps)))
    bands, top = [], rows[0][0]
    for i, g in enumerate(gaps):
        if g >= thr:
            bands.append(_tight(ink, (x0, y0 + top, x1, y0 + rows[i][1])))
            top = rows[i + 1][0]
    bands.append(_tight(ink, (x0, y0 + top, x1, y0 + rows[-1][1])))
    return bands


def _heading(sub, unit):
    """A band of one or two lines without a gutter-wide blank inside it: a heading, not the first
    row of lines across columns."""
    gaps = runs(sub.sum(0) <= max(1, unit // 3))  # the band is tight: every blank run is inside it
    return len(_text_lines(sub, unit)) <= 2 and all(b - a < GUTTER * unit for a, b in gaps)


def _cut(ink, box, unit, depth=0):
    """Recursive XY-cut of one region -> its column regions in reading order."""
    if depth > 12:  # pages nest a few levels deep; a runaway recursion is a bug, not a layout
        return [box]
    bands = _bands(ink, box, unit)
    if len(bands) > 1 and _heading(_crop(ink, bands[0]), unit):
        # a heading above columns is read first, even where a gutter runs past it (a title
        # centred over the right columns would otherwise be read after the left one)
        rest = _cut(ink, _tight(ink, (box[0], bands[1][1], box[2], box[3])), unit, depth + 1)
        if len(rest) > 1:
            return [bands[0]] + rest
    lr = _gutter(ink, box, unit)
    if lr is not None:
        return _cut(ink, lr[0], unit, depth + 1) + _cut(ink, lr[1], unit, depth + 1)
    if len(bands) > 1:
        parts = [_cut(ink, b, unit, depth + 1) for b in bands]
        if any(len(p) > 1 for p in parts):  # only worth cutting if some band holds columns
            return [r for p in parts for r in p]
    return [box]


def find_columns(ink, unit=None):
    """Bool ink mask [h, w] -> [(x0, y0, x1, y1)]: the column regions of the page in reading order
    (left column before right, a title band above them first), as pixel boxes in the mask's own
    coordinates (x1, y1 exclusive; a region's line at rows t..b of ink[y0:y1, x0:x1] is at rows
    y0 + t..y0 + b of the page). With no gutter anywhere: [(0, 0, w, h)], the whole mask, so a
    single-column page or a one-line crop is cut exactly as without this step. unit: glyph_unit(ink)
    when the caller has it already."""
    h, w = ink.shape
    whole = [(0, 0, w, h)]
    unit = glyph_unit(ink) if unit is None else unit
    box = _tight(ink, (0, 0, w, h))
    if unit is None or box is None:
        return whole
    regions = _cut(ink, box, unit)
    return regions if len(regions) > 1 else whole


# -----------------------------------------------------------------------------
# Orientation

def _region_of(mask, ys, xs, unit):
    """Index of the find_columns region of mask holding each point (ys, xs) of it (0 for specks
    left out in a gutter). Text columns are flush left, so upside down they are flush right and
    find_columns rejects them: then the mask turned by 180 degrees is tried too (unit: the mask's
    glyph_unit, the same for both)."""
    h, w = mask.shape
    boxes = find_columns(mask, unit)
    if len(boxes) == 1:
        boxes = [(w - x1, h - y1, w - x0, h - y0) for x0, y0, x1, y1 in find_columns(mask[::-1, ::-1], unit)]
    rmap = np.zeros(mask.shape, np.int32)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        rmap[y0:y1, x0:x1] = k
    return rmap[ys, xs].astype(np.int64)


def _peaked(u, v, group, n_angles=21, max_deg=5.0):
    """How peaked the profile of points along v is, at the best of a few small tilts (a scan is
    rarely level): (score, that angle in radians). The score is sum(counts^2) * extent /
    (sum counts)^2 (~1 for a flat profile, ~1.5-3 for text lines seen across), taken within each
    group of points (a column region) and averaged by ink: the lines of neighbouring columns are
    offset by their paragraph gaps, and summed over a whole page they blur into a flat profile."""
    u, v = u.astype(np.float64), v.astype(np.float64)
    n_groups = int(group.max()) + 1
    best = (-1.0, 0.0)
    for a in np.radians(np.linspace(-max_deg, max_deg, n_angles)):
        rv = np.rint(-np.sin(a) * u + np.cos(a) * v).astype(np.int64)
        rv -= rv.min()
        n = int(rv.max()) + 1
        counts = np.bincount(group * n + rv, minlength=n_groups * n).reshape(n_groups, n).astype(np.float64)
        score = 0.0
        for c in counts:
            nz = np.flatnonzero(c)
            if len(nz):
                score += float((c ** 2).sum() * (nz[-1] - nz[0] + 1) / c.sum()) / len(u)
        if score > best[0]:
            best = (score, float(a))
    return best


def _level(u, v, a):
    """Points rotated by angle a: (rows, columns) as non-negative ints."""
    u, v = u.astype(np.float64), v.astype(np.float64)
    rv = np.rint(-np.sin(a) * u + np.cos(a) * v).astype(np.int64)
    ru = np.rint(np.cos(a) * u + np.sin(a) * v).astype(np.int64)
    return rv - rv.min(), ru - ru.min()


def _n_lines(rv, ru):
    """Text lines in a level profile: blank-separated runs of rows (holding >= 2% of the fullest
    row's ink) at least LINE_ASPECT line pitches long. Seen across, the letters of a one-line crop
    also give blank-separated runs, but each only about as long as the letters' pitch."""
    c = np.bincount(rv)
    rs = [(t, b) for t, b in runs(c > max(1, 0.02 * c.max())) if b - t >= 2]
    if len(rs) < 2:
        return len(rs)
    pitch = float(np.median(np.diff([t for t, _ in rs])))
    lo, hi = np.full(len(c), np.iinfo(np.int64).max), np.full(len(c), -1)
    np.minimum.at(lo, rv, ru)
    np.maximum.at(hi, rv, ru)
    return sum(int(hi[t:b].max() - lo[t:b].min()) >= LINE_ASPECT * pitch for t, b in rs)


def baseline_evidence(labels, ys, xs, rv, ru, unit):
    """(evidence, agreement, letters): evidence > 0 for upright Latin print, < 0 upside down, ~0
    without any; agreement the fraction of letters in lines that say upright; letters how many
    were measured. Within each line, evidence is the fraction of letters whose bottom sits on the
    line's baseline minus the fraction whose top sits on its x-height line (averaged over
    letters). Every letter but g j p q y stands on the baseline, while tops split between the
    x-height (a c e m n o r s ...) and the ascender / capital line (b d f h k l t, capitals,
    digits), so bottoms agree far more than tops; turned by 180 degrees, the other way round.
    labels: connected components of the ink (not closed: that joins letters into words, whose
    tops and bottoms are each set by their tallest letter); ys, xs: its ink pixels; rv, ru: their
    level rows and columns (non-negative ints); unit: glyph_unit of the level page. A line is a
    run of inked rows within one column and one slice of it, so the offset lines of neighbouring
    columns do not merge into one."""
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    lab, rvs, rus = lab[order], rv[order], ru[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    top, bot = np.minimum.reduceat(rvs, starts), np.maximum.reduceat(rvs, starts)
    cu = np.add.reduceat(rus, starts) // np.diff(np.r_[starts, len(lab)])
    # lines: runs of inked rows within a column (find_columns on the level mask) and within a
    # slice of it SLICE letter heights wide (what tilt is left after levelling then barely matters)
    nrows, width = int(rv.max()) + 1, int(ru.max()) + 1
    level = np.zeros((nrows, width), bool)
    level[rv, ru] = True
    rmap = np.zeros((nrows, width), np.int64)
    x0s = []
    for k, (x0, y0, x1, y1) in enumerate(find_columns(level, unit)):
        rmap[y0:y1, x0:x1] = k
        x0s.append(x0)
    slice_w = max(8, int(SLICE * float(np.median(bot - top + 1))))
    n_sl = width // slice_w + 1
    def group(r, c):  # (column region, slice) of level pixels
        reg = rmap[r, c]
        return reg * n_sl + np.maximum(0, c - np.asarray(x0s)[reg]) // slice_w  # gutter specks: slice 0
    g = group(rv, ru)
    n_g = int(g.max()) + 1
    counts = np.bincount(g * nrows + rv, minlength=n_g * nrows).reshape(n_g, nrows)
    run_id = np.full((n_g, nrows), -1, np.int64)
    run_h = []
    for i, c in enumerate(counts):
        for t, b in runs(c > 0):
            run_id[i, t:b] = len(run_h)
            run_h.append(b - t)
    mid = (top + bot) // 2
    key = run_id[group(mid, np.minimum(cu, width - 1)), mid]
    evidence, agree, total = 0.0, 0.0, 0
    for g in np.unique(key[key >= 0]):
        m = key == g
        h = bot[m] - top[m] + 1
        # letters (x-height ~0.5 of a line's height and more), not dots, commas, accents, nor the
        # fragments that thin strokes break into under a threshold (their tops and bottoms are
        # anywhere)
        keep = h >= 0.4 * run_h[g]
        if keep.sum() < 5:
            continue
        t, b = top[m][keep], bot[m][keep]
        tol = max(1.0, 0.08 * float(np.median(h[keep])))
        fb = float(np.mean(np.abs(b - np.median(b)) <= tol))
        ft = float(np.mean(np.abs(t - np.median(t)) <= tol))
        evidence += keep.sum() * (fb - ft)
        agree += keep.sum() * (fb > ft)
        total += int(keep.sum())
    return evidence / max(1, total), agree / max(1, total), total


def detect_orientation(ink):
    """Bool ink mask -> 0, 90, 180 or 270: the degrees the page is turned clockwise, so that
    np.rot90(ink, k // 90) (counter-clockwise) sets it upright (orientation's first value)."""
    return orientation(ink)[0]


def orientation(ink):
    """Bool ink mask -> (degrees, sure): degrees as detect_orientation (0, 90, 180 or 270, turned
    clockwise); sure False when the page has lines, so which way they run is known, but the
    up / down test gave no clear answer: then degrees is the upright guess of the two (0 or 90)
    and `degrees + 180` is as likely, and a reader with a model settles it by reading a few
    lines both ways (reader.settle_turn): the letters were measured (MIN_LETTERS ...) but their
    evidence is within MIN_ASYM of 0 or the lines disagree. 0 unless the evidence is clear: at least
    MIN_ORIENT_LINES lines, one profile PEAK_RATIO times more peaked than the other, and for a
    half turn baseline_evidence below -MIN_ASYM from MIN_LETTERS letters or more, most lines
    agreeing (a blank image, a one-line crop, a page of capitals or digits, or of a script without
    ascenders and descenders, stays as it is). sure is True where there is nothing to settle: no
    lines (a blank image, a one-line crop), a clear up / down answer, or too few letters to
    measure. ~0.3 s for a 1024x1024
    page on one core. The closing for the second try is vertical in the upright page: (3, 1) in the
    mask when upright or upside down, (1, 3) when turned a quarter."""
    ys, xs = np.nonzero(ink)
    if len(xs) < 200:
        return 0, True
    step = max(1, len(xs) // 20000)  # the tilt search on a subsample; the best tilt then on every pixel
    y, x = ys[::step], xs[::step]
    row_unit = glyph_unit(ink)
    # three lines stacked need about three letter heights across them, whichever way they run: a
    # one-line crop (the reader's most common input, and the CPU recipe's training lines) stops here
    if row_unit is None or min(ys.max() - ys.min(), xs.max() - xs.min()) + 1 < 3 * row_unit:
        return 0, True
    quarter = np.rot90(ink, 1)
    col_unit = glyph_unit(quarter)
    if col_unit is None:
        return 0, True
    row_score, row_a = _peaked(x, y, _region_of(ink, y, x, row_unit))
    # turned a quarter: in np.rot90(ink, 1) pixel (y, x) lands on row w - 1 - x, column y, so the
    # upright rows are -x and the columns y
    col_score, col_a = _peaked(y, -x, _region_of(quarter, ink.shape[1] - 1 - x, y, col_unit))
    if row_score >= PEAK_RATIO * col_score:
        turned, unit, (rv, ru) = 0, row_unit, _level(xs, ys, row_a)
    elif col_score >= PEAK_RATIO * row_score:
        turned, unit, (rv, ru) = 90, col_unit, _level(ys, -xs, col_a)
    else:
        return 0, True
    n_lines = _n_lines(rv, ru)
    if n_lines < MIN_ORIENT_LINES:
        return 0, True
    min_letters = max(MIN_LETTERS, MIN_LETTERS_PER_LINE * n_lines)
    # letters as connected components; where that is inconclusive, thin strokes may have broken
    # them into pieces: again with vertical breaks of a pixel closed (a 3x1 closing, which joins a
    # letter's pieces but not neighbouring letters, which sit side by side)
    mask = ink.astype(np.uint8)
    measured = False
    for closing in (None, (3, 1)) if turned == 0 else (None, (1, 3)):
        m = mask if closing is None else cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones(closing, np.uint8))
        labels = cv2.connectedComponents(m, connectivity=8)[1]
        evidence, agree, letters = baseline_evidence(labels, ys, xs, rv, ru, unit)
        # upside down only on clear evidence: enough letters, on balance and line by line
        if letters >= min_letters and evidence <= -MIN_ASYM and agree <= 1 - MIN_AGREE:
            return (turned + 180) % 360, True
        if letters >= min_letters and evidence >= MIN_ASYM:
            return turned, True
        measured |= letters >= min_letters
    # enough letters measured, but their tops and bottoms agree about as well (small print): not
    # sure. Too few letters to measure (a heavy face, a page of symbols or capitals) is no case
    # for the model either: on the speedrun model a page of symbols read with more confidence
    # upside down (their shapes turn into each other: [ ], { }, < >, « », 6 9), so it stays as it is
    return turned, not measured
