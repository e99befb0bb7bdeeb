"""
Finding a photographed page and flattening it: the first step of strips.clean_image.

A phone photo of a page shows it as a bright convex quadrilateral on a darker surface, tilted in
perspective. find_page returns its 4 corners and unwarp_page maps them to a rectangle, so the rest
of the reader sees what a scan of the page would show. Two ways to find it, the cheap one first:

  1. outline: Canny edges of a downscaled copy and the largest contour that simplifies to a convex
     quadrilateral (the classic document-scanner recipe: 2-6 ms, corners within ~0.5% of the page's
     diagonal where it applies);
  2. region, where the outline does not close -- the page runs off the frame, the surface is
     nearly as bright as the paper, a shadow lies across an edge: GrabCut segments the page from
     its colour and contrast, seeded with the image's centre as the page, its border as probably
     not, and the rest by brightness; the page is then the smallest quadrilateral whose sides lie
     on the region's outline, each side refitted to it, so a corner outside the frame is found
     where two sides' extensions meet (~25-30 ms of one core for a 1000-px photo).

Either answer is accepted only if its quadrilateral covers 30-97% of the image and what lies
outside it is clearly darker than what lies inside (a scan, a crop, a boxed table on a white page
or light text on dark paper is no photographed page: None). The region step runs only when part
of the image's border is clearly darker than its centre (a surface shows), so a scan or a crop
costs the outline step alone. On realistic:photos' validation seeds 1-12 (96 photos) the outline
step finds 62 pages, both steps together 95 (the other fills 97% of the frame), every corner within
2.4% of the page's diagonal.
"""

import itertools

import cv2
import numpy as np
from PIL import Image

OUTLINE_SIDE = 500   # the outline search's downscale (long side, px): Canny at 5x5 blur is robust there
REGION_SIDE = 224    # GrabCut's downscale: its cost grows with the pixels; at 224 the validation photos'
                     # corners (realistic:photos seeds 1-12) are off by 0.5% of the page's diagonal (median)
DARKER = 0.75        # the surface around a page is darker than this fraction of the paper's median
EDGE_TRIM = 0.02     # share of the flattened page's width / height cut from each side (unwarp_page)
MIN_AREA, MAX_AREA = 0.3, 0.97  # the page's share of the image: less is a photo of something else,
                                # more is a scan or a crop with nothing around it to cut away


def _order(pts):
    """4 points -> float32 [4, 2] in the order top-left, top-right, bottom-right, bottom-left."""
    pts = np.asarray(pts, np.float32).reshape(4, 2)
    order = np.argsort(pts.sum(1))  # top-left has the smallest x + y, bottom-right the largest
    tl, br = pts[order[0]], pts[order[3]]
    a, b = pts[order[1]], pts[order[2]]
    tr, bl = (a, b) if a[0] > b[0] else (b, a)
    return np.array([tl, tr, br, bl], np.float32)


def _is_page(grey, quad):
    """Does quad ([4, 2], in grey's pixels, possibly reaching past its border) outline a page:
    30-97% of the image inside it, and clearly darker outside than inside?"""
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad).astype(np.int32), 1)
    share = mask.mean()
    if not MIN_AREA < share < MAX_AREA:
        return False
    return np.median(grey[mask == 0]) <= DARKER * np.median(grey[mask == 1])


def _outline_quad(grey):
    """Step 1: the largest convex 4-corner contour of the Canny edges that _is_page, or None."""
    f = min(1.0, OUTLINE_SIDE / max(grey.shape))
    small = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else grey
    edges = cv2.dilate(cv2.Canny(cv2.GaussianBlur(small, (5, 5), 0), 40, 120), np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for c in sorted(contours, key=cv2.contourArea, reverse=True)[:5]:
        quad = cv2.approxPolyDP(c, 0.02 * cv2.arcLength(c, True), True)
        if len(quad) == 4 and cv2.isContourConvex(quad) and _is_page(small, quad.reshape(4, 2)):
            return _order(quad.reshape(4, 2) / f)
    return None


def _line(p, q):
    """The line through points p and q, in homogeneous coordinates."""
    return np.cross([p[0], p[1], 1.0], [q[0], q[1], 1.0])


def enclosing_quad(points, frame=None):
    """The smallest quadrilateral (float32 [4, 2], in the hull's order) containing the convex hull
    of points (a region's outline, int or float [n, 2]) whose 4 sides lie on sides of that hull
    (simplified to at most 8 sides), each then refitted to the points along it (least squares), or
    None if the hull has fewer than 4 sides. frame=(w, h): the points are pixels of a w x h image,
    and hull sides along its border are where the frame cut the region, not its outline: they are
    used only if fewer than 4 other sides are left. The true sides are then extended past the cut
    to meet at the corner the frame hides."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    hull = cv2.convexHull(points.reshape(-1, 1, 2))
    for eps in (0.01, 0.02, 0.04, 0.08):  # coarser until few sides are left: C(8, 4) = 70 candidates at most
        poly = cv2.convexHull(cv2.approxPolyDP(hull, eps * cv2.arcLength(hull, True), True)).reshape(-1, 2)
        if len(poly) <= 8:
            break
    n = len(poly)
    if n < 4:
        return None
    cut = np.zeros(n, bool)
    if frame is not None:
        w, h = frame
        for i in range(n):
            (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
            cut[i] = (max(x0, x1) <= 1 or min(x0, x1) >= w - 2 or max(y0, y1) <= 1 or min(y0, y1) >= h - 2)
    usable = [i for i in range(n) if not cut[i]] if (~cut).sum() >= 4 else list(range(n))
    poly = poly.astype(np.float64)
    sides = [_line(poly[i], poly[(i + 1) % n]) for i in range(n)]
    best, best_area = None, np.inf
    for pick in itertools.combinations(usable, 4):  # 4 sides in the hull's order: consecutive ones meet
        corners = [np.cross(sides[a], sides[b]) for a, b in zip(pick, pick[1:] + pick[:1])]
        if any(abs(c[2]) < 1e-9 for c in corners):  # parallel sides never meet
            continue
        quad = np.array([c[:2] / c[2] for c in corners], np.float32)
        area = cv2.contourArea(quad)
        # the 4 sides' half-planes hold the hull; their corners outline that region only if the
        # quadrilateral is convex and holds every vertex (else the lines met on the wrong side)
        if area >= best_area or not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
            continue
        if min(cv2.pointPolygonTest(quad, (float(x), float(y)), True) for x, y in poly) < -1.0:
            continue
        best, best_area = quad, area
    return None if best is None else _refit(best, points, frame)


def _refit(quad, points, frame):
    """quad's sides, each refitted to the points within 2 px of it and away from its ends (a
    simplified hull's side is a chord between two of its vertices: its slope is off by the rounding
    at the corners, and an extended side carries that error to a corner outside the frame)."""
    if frame is not None:  # points on the frame's border are the cut, not the outline
        w, h = frame
        x, y = points[:, 0], points[:, 1]
        points = points[(x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)]
    sides = []
    for i in range(4):
        p, q = quad[i].astype(np.float64), quad[(i + 1) % 4].astype(np.float64)
        d = q - p
        length = np.linalg.norm(d)
        rel = points - p
        t = rel @ d / length ** 2  # position along the side, 0 at p, 1 at q
        near = points[(np.abs(rel[:, 0] * d[1] - rel[:, 1] * d[0]) / length < 2) & (t > 0.1) & (t < 0.9)]
        if len(near) < 10:  # too little of this side is seen to refit it
            sides.append(_line(p, q))
            continue
        vx, vy, x0, y0 = cv2.fitLine(near.reshape(-1, 1, 2), cv2.DIST_L2, 0, 0.01, 0.01).ravel()
        sides.append(_line((x0, y0), (x0 + vx, y0 + vy)))
    corners = [np.cross(sides[i - 1], sides[i]) for i in range(4)]  # corner i: where sides i-1 and i meet
    if any(abs(c[2]) < 1e-9 for c in corners):
        return quad
    refit = np.array([c[:2] / c[2] for c in corners], np.float32)
    # a refit that moves a corner by more than a tenth of the quad's size went wrong: keep the chords
    return refit if np.abs(refit - quad).max() < 0.1 * np.ptp(quad, axis=0).max() else quad


def _region_quad(rgb, grey):
    """Step 2: the page as the GrabCut region grown from the centre, its enclosing_quad, or None."""
    f = min(1.0, REGION_SIDE / max(grey.shape))
    small = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else rgb
    g = cv2.resize(grey, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA) if f < 1 else grey
    h, w = g.shape
    b = max(2, min(h, w) // 20)
    ring = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[:, :b].ravel(), g[:, -b:].ravel()])
    centre = g[int(0.35 * h):int(0.65 * h), int(0.35 * w):int(0.65 * w)]
    if np.percentile(ring, 25) > DARKER * np.median(centre):  # no surface shows at the border: a scan
        return None
    # seeds: the centre is page (a photographed page fills it), the border probably surface (it may
    # be page where the page runs off the frame: GrabCut may relabel it), the rest probably page if
    # brighter than halfway between the two, else probably surface (starting from "all page" here,
    # one GrabCut round leaves a grey desk next to white paper as page)
    split = (np.percentile(ring, 25) + np.median(centre)) / 2
    mask = np.where(g > split, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = (cv2.GC_PR_BGD,) * 4
    mask[int(0.35 * h):int(0.65 * h), int(0.35 * w):int(0.65 * w)] = cv2.GC_FGD
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)  # GrabCut's GMM state
    cv2.setRNGSeed(0)  # GrabCut starts its colour models with k-means++ on OpenCV's RNG: same image, same page
    cv2.grabCut(small, mask, None, *models, 1, cv2.GC_INIT_WITH_MASK)
    page = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    page = cv2.morphologyEx(page, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))  # text-sized holes shut
    n, labels, stats, _ = cv2.connectedComponentsWithStats(page, connectivity=4)
    if n < 2:
        return None
    largest = (labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])).astype(np.uint8)
    outline = max(cv2.findContours(largest, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
    quad = enclosing_quad(outline.reshape(-1, 2), frame=(w, h))
    # a page's hidden corners lie just past the frame; sides that meet far out (two nearly parallel
    # sides, one of them a ragged stretch of the region's outline) are no page's corners
    if quad is None or not cv2.isContourConvex(quad.reshape(-1, 1, 2)) or \
            not (quad >= -0.25 * np.array([w, h])).all() or not (quad <= 1.25 * np.array([w, h])).all():
        return None
    if not _is_page(g, quad):
        return None
    # a mask pixel at index x covers [x, x + 1) of the small image: (x + 0.5) / f - 0.5 in the original's
    return _order((quad + 0.5) / f - 0.5)


def find_page(img):
    """A photo of a page on a darker surface (uint8 array, RGB [h, w, 3] or grey [h, w]) -> the
    page's 4 corners (float32 [4, 2]: top-left, top-right, bottom-right, bottom-left, in pixels;
    a corner outside the frame lies outside the image), or None for a scan or a crop."""
    img = np.asarray(img)
    rgb = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if min(grey.shape) < 100:
        return None
    quad = _outline_quad(grey)
    return quad if quad is not None else _region_quad(rgb, grey)


def unwarp_page(img):
    """unwarp_page_mapped without its matrix."""
    return unwarp_page_mapped(img)[0]


def unwarp_page_mapped(img):
    """(An RGB PIL image -> the page flattened to a rectangle if find_page sees a photographed page,
    else the image itself. What lies outside the frame (a corner the photo cut off) repeats the
    nearest edge pixels. The rectangle's outer EDGE_TRIM of each side is cut away: corners found
    within ~1% leave slivers of the surface along the page's edges, dark lines the ink threshold
    takes for text (a blank page read as "ink" along all four edges), and a page's text sits well
    inside its margins. Also returns the 3x3 matrix taking the input's pixels to the flat page's
    (identity when nothing was flattened): the reader maps line boxes back with it.)"""
    rgb = np.asarray(img.convert("RGB"))
    quad = find_page(rgb)
    if quad is None:
        return img, np.eye(3)
    tl, tr, br, bl = quad
    W = int(round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))))
    H = int(round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))))
    M = cv2.getPerspectiveTransform(quad, np.array([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], np.float32))
    flat = cv2.warpPerspective(rgb, M, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    dx, dy = int(round(EDGE_TRIM * W)), int(round(EDGE_TRIM * H))
    trim = np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1]], np.float64)
    return Image.fromarray(flat[dy:H - dy, dx:W - dx]), trim @ M.astype(np.float64)
