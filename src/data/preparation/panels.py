"""Comic panels from a page with classical image processing: no model, no training data.

0. The page is scaled so that its longer side is `work_size` px, which the pixel-sized settings
   (blur, line widths) assume; the panels found are scaled back to the page.
1. Binarise: near-white pixels are paper. Paper connected to the page edge is background (the
   gutters and margins), except wide paper deep inside the page (`inner_paper`, `margin_depth`):
   that is the white of a panel whose art bleeds off the page, which would otherwise fall apart
   into its separate strokes. Everything else, holes filled, is panel content; a region that is
   nearly all paper (`blank`) is an empty page.
2. Panels whose content touches (a speech balloon over the gutter, art bleeding across it, a
   frameless panel under a bordered one) form one region. Each region is split recursively along
   the straight line, near-horizontal or near-vertical (`max_slant`), with the strongest evidence
   of being a panel boundary, while such a line exists:
   - a gutter: the line runs over paper for most of its length (`gutter_paper`), part of it over
     background (`gutter_background`), both its ends open onto background, and it lies in a band
     of such lines no wider than a gutter (`max_gutter`: wider white is a frameless panel's
     paper, not a gutter); or
   - a border: a straight edge (an intensity step across the line) along most of its length
     (`edge_support`), as where a frameless panel meets a bordered one.
   Both sides must keep enough content (`min_area`) and width (`min_side`) to be panels.
3. Regions smaller than `min_area` of the page (page numbers, stray marks) are dropped, and so are
   regions whose box lies mostly inside a larger panel's box (`contained`: text on a cover).

`python -m benchmarks.manga_panels FOLDER` measures it against ground-truth boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from src.data.preparation.inputs import Unlabelled


@dataclass
class Maps:
    """Per-pixel evidence for one region, cropped to its box; transposed for horizontal cuts."""

    content: np.ndarray  # uint8: the region
    paper: np.ndarray  # uint8: near-white, or background
    background: np.ndarray  # uint8: paper connected to the page edge
    edges: np.ndarray  # uint8: intensity steps across the cut direction

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> Maps:
        return Maps(*(m[y0:y1, x0:x1] for m in (self.content, self.paper, self.background, self.edges)))

    def transposed(self, edges_across: np.ndarray) -> Maps:
        return Maps(self.content.T.copy(), self.paper.T.copy(), self.background.T.copy(), edges_across.T.copy())


class PanelExtractor:
    """Instance ids of the panels of a page (0 elsewhere), numbered top to bottom, right to left."""

    def __init__(
        self,
        white_level: int,
        min_area: float,
        min_side: float,
        gutter_paper: float,
        gutter_background: float,
        gutter_end: float,
        edge_support: float,
        edge_strength: float,
        edge_blur: float,
        max_slant: float,
        slant_steps: int,
        contained: float,
        max_depth: int,
        max_gutter: float,
        work_size: int,
        inner_paper: float,
        margin_depth: float,
        blank: float,
        merge_overlap: float,
    ):
        """The settings of `prepare.panel` in conf/prepare/manga.yaml, where their defaults and meaning live."""
        self.white_level, self.min_area, self.min_side = int(white_level), float(min_area), float(min_side)
        self.gutter_paper, self.gutter_background = float(gutter_paper), float(gutter_background)
        self.gutter_end, self.edge_support = float(gutter_end), float(edge_support)
        self.edge_strength, self.edge_blur = float(edge_strength), float(edge_blur)
        self.max_slant, self.slant_steps = float(max_slant), int(slant_steps)
        self.contained, self.max_depth = float(contained), int(max_depth)
        self.max_gutter, self.work_size = float(max_gutter), int(work_size)
        self.inner_paper, self.margin_depth, self.blank = float(inner_paper), float(margin_depth), float(blank)
        self.merge_overlap = float(merge_overlap)

    def __call__(self, name: str, image: np.ndarray) -> tuple[None, np.ndarray]:
        """Labeller interface of `src.data.preparation.manga`: the page unchanged, and its panel ids."""
        ids = self.extract(image)
        if not ids.any():
            raise Unlabelled("no panel found (a blank page?)")
        return None, ids

    def extract(self, image: np.ndarray) -> np.ndarray:
        """Panel ids (H, W) int32 of an RGB or grey page; 0 outside every panel."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = self.work_size / max(gray.shape)
        if abs(scale - 1) > 0.02:  # pixel-sized settings (blur, line widths) then mean the same on any scan
            size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
            ids = self._extract(cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC))
            return cv2.resize(ids, gray.shape[::-1], interpolation=cv2.INTER_NEAREST)
        return self._extract(gray)

    def _extract(self, gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        paper = gray >= self.white_level
        background = self._background(paper)
        content = ndi.binary_fill_holes(~background)
        vertical_edges, horizontal_edges = self._edges(gray)
        self._page = (h, w)
        min_pixels = self.min_area * h * w
        parts: list[tuple[int, int, np.ndarray]] = []  # (y0, x0, mask cropped to its box)
        regions, _ = ndi.label(content)
        for index, box in enumerate(ndi.find_objects(regions), start=1):
            region = (regions[box] == index).astype(np.uint8)
            if region.sum() < min_pixels or paper[box][region > 0].mean() >= self.blank:
                continue
            maps = Maps(region, (paper[box] | background[box]).astype(np.uint8), background[box].astype(np.uint8),
                        vertical_edges[box])  # fmt: skip
            for y0, x0, part in self._split(maps, horizontal_edges[box], min_pixels, 0):
                parts.append((y0 + box[0].start, x0 + box[1].start, part))
        return self._paint(self._drop_contained(self._merge_overlapping(parts)), (h, w))

    # evidence ------------------------------------------------------------------
    def _background(self, paper: np.ndarray) -> np.ndarray:
        """Paper reaching the page edge: the margins and gutters.

        Of the paper areas that reach the edge, the largest is the margins and gutters; another one
        with wide paper deeper inside the page than a margin (`inner_paper`, `margin_depth`) is the
        white of a panel whose art bleeds off the page, fenced off by its frame: not background.
        """
        h, w = paper.shape
        short = min(h, w)
        labels, _ = ndi.label(paper)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        edge = edge[edge > 0]
        if len(edge) > 1:
            free = cv2.distanceTransform(np.pad(paper.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
            depth = round(self.margin_depth * short)
            inner = np.zeros_like(paper)
            inner[depth : h - depth, depth : w - depth] = True
            inner &= free > self.inner_paper * short
            largest = edge[np.argmax(ndi.sum(paper, labels, edge))]
            has_inner = ndi.maximum(inner, labels, edge).astype(bool)
            edge = edge[(edge == largest) | ~has_inner]
        return np.isin(labels, edge)

    def _edges(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Strong intensity steps across vertical (resp. horizontal) lines, 1 px either side."""
        blurred = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), self.edge_blur)
        gx = np.abs(cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3))
        gy = np.abs(cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3))
        vertical = ((gx >= self.edge_strength) & (gx >= 2 * gy)).astype(np.uint8)
        horizontal = ((gy >= self.edge_strength) & (gy >= 2 * gx)).astype(np.uint8)
        return cv2.dilate(vertical, np.ones((1, 3), np.uint8)), cv2.dilate(horizontal, np.ones((3, 1), np.uint8))

    def _best_cut(self, maps: Maps, min_pixels: float) -> tuple[float, int, int] | None:
        """(score, x at the top, x at the bottom) of the best near-vertical cut of `maps`, or None.

        Each slant shears the maps so that its lines become columns; one column sum then scores
        every line of that slant at once.
        """
        h, w = maps.content.shape
        if h < 8 or w < 8:
            return None
        max_shift = int(self.max_slant * h)
        total = int(maps.content.sum())
        end = max(2, int(self.gutter_end * h))
        min_width = self.min_side * min(self._page)
        best = None
        for shift in np.unique(np.linspace(-max_shift, max_shift, 2 * self.slant_steps + 1).round().astype(int)):
            pad = abs(int(shift))
            shear = np.float32([[1, -shift / (h - 1), pad], [0, 1, 0]])
            size = (w + 2 * pad, h)

            def sheared(m: np.ndarray, shear: np.ndarray = shear, size: tuple[int, int] = size) -> np.ndarray:
                return cv2.warpAffine(m, shear, size, flags=cv2.INTER_NEAREST, borderValue=0)

            content = sheared(maps.content)
            on_line = content.sum(0).astype(np.int64)
            before = np.cumsum(on_line) - on_line
            after = total - before - on_line
            paper = sheared(maps.paper).sum(0) / h
            background = sheared(maps.background).sum(0) / h
            support = sheared(maps.edges).sum(0) / h
            open_ends = (content[:end] == 0).any(0) & (content[h - end :] == 0).any(0)
            top = np.arange(len(on_line)) - pad
            wide = (np.minimum(top, top + shift) >= min_width) & (w - 1 - np.maximum(top, top + shift) >= min_width)
            gutter = (paper >= self.gutter_paper) & (background >= self.gutter_background) & open_ends
            gutter &= ~wide_runs(gutter, self.max_gutter * min(self._page))
            border = support >= self.edge_support
            valid = wide & (before >= min_pixels) & (after >= min_pixels) & (gutter | border)
            if valid.any():
                score = np.where(valid, np.maximum(paper + background, 2 * support), -1.0)
                i = int(np.argmax(score))
                if best is None or score[i] > best[0]:
                    best = (float(score[i]), i - pad, i - pad + int(shift))
        return best

    # recursion -------------------------------------------------------------------
    def _split(
        self, maps: Maps, across: np.ndarray, min_pixels: float, depth: int
    ) -> list[tuple[int, int, np.ndarray]]:
        """Parts of a region as (y0, x0, mask) in the region's coordinates."""
        vertical = self._best_cut(maps, min_pixels) if depth < self.max_depth else None
        horizontal = self._best_cut(maps.transposed(across), min_pixels) if depth < self.max_depth else None
        if vertical is None and horizontal is None:
            return [(0, 0, maps.content)]
        is_vertical = horizontal is None or (vertical is not None and vertical[0] >= horizontal[0])
        _, top, bottom = vertical if is_vertical else horizontal
        h, w = maps.content.shape if is_vertical else maps.content.shape[::-1]
        line = np.zeros((h, w), np.uint8)
        cv2.line(line, (int(top), 0), (int(bottom), h - 1), 1, 3)
        if not is_vertical:
            line = line.T
        pieces, _ = ndi.label(maps.content.astype(bool) & ~line.astype(bool))
        parts = []
        for index, box in enumerate(ndi.find_objects(pieces), start=1):
            piece = pieces == index
            if piece[box].sum() < 0.3 * min_pixels:  # crumbs the cut line leaves
                continue
            sub = Maps(piece.astype(np.uint8), maps.paper, maps.background, maps.edges).crop(
                box[0].start, box[0].stop, box[1].start, box[1].stop
            )
            for y0, x0, part in self._split(sub, across[box], min_pixels, depth + 1):
                parts.append((y0 + box[0].start, x0 + box[1].start, part))
        return parts

    # results ---------------------------------------------------------------------
    def _merge_overlapping(self, parts: list[tuple[int, int, np.ndarray]]) -> list[tuple[int, int, np.ndarray]]:
        """Parts whose boxes overlap by `merge_overlap` of the smaller one become one: pieces of a
        panel that its own white broke apart (panels beside each other do not overlap)."""
        parts = list(parts)
        merged = True
        while merged:
            merged = False
            for i in range(len(parts)):
                for j in range(i + 1, len(parts)):
                    a, b = box_of(parts[i]), box_of(parts[j])
                    if overlap(a, b) >= self.merge_overlap * min(area(a), area(b)):
                        parts[i] = union(parts[i], parts[j])
                        del parts[j]
                        merged = True
                        break
                if merged:
                    break
        return parts

    def _drop_contained(self, parts: list[tuple[int, int, np.ndarray]]) -> list[tuple[int, int, np.ndarray]]:
        min_pixels = self.min_area * self._page[0] * self._page[1]
        parts = sorted((p for p in parts if p[2].sum() >= min_pixels), key=lambda p: -int(p[2].sum()))
        kept: list[tuple[int, int, np.ndarray]] = []
        for y0, x0, part in parts:
            box = (x0, y0, x0 + part.shape[1], y0 + part.shape[0])
            inside = any(
                overlap(box, (kx, ky, kx + k.shape[1], ky + k.shape[0])) >= self.contained * area(box)
                for ky, kx, k in kept
            )
            if not inside:
                kept.append((y0, x0, part))
        return kept

    @staticmethod
    def _paint(parts: list[tuple[int, int, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
        ids = np.zeros(shape, np.int32)
        order = sorted(parts, key=lambda p: (p[0], -(p[1] + p[2].shape[1])))
        for value, (y0, x0, part) in enumerate(order, start=1):
            view = ids[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]]
            view[part.astype(bool)] = value
        return ids


def wide_runs(flags: np.ndarray, longest: float) -> np.ndarray:
    """Marks the runs of consecutive True values longer than `longest`."""
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    starts, stops = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
    out = np.zeros(len(flags), bool)
    for start, stop in zip(starts, stops, strict=True):
        if stop - start > longest:
            out[start:stop] = True
    return out


def box_of(part: tuple[int, int, np.ndarray]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a (y0, x0, mask) part."""
    y0, x0, mask = part
    return x0, y0, x0 + mask.shape[1], y0 + mask.shape[0]


def union(a: tuple[int, int, np.ndarray], b: tuple[int, int, np.ndarray]) -> tuple[int, int, np.ndarray]:
    """The (y0, x0, mask) part covering both parts' masks."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box_of(a), box_of(b)
    x0, y0 = min(ax0, bx0), min(ay0, by0)
    mask = np.zeros((max(ay1, by1) - y0, max(ax1, bx1) - x0), np.uint8)
    for py0, px0, part in (a, b):
        view = mask[py0 - y0 : py0 - y0 + part.shape[0], px0 - x0 : px0 - x0 + part.shape[1]]
        view |= part.astype(np.uint8)
    return y0, x0, mask


def area(box: tuple[int, int, int, int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def panel_boxes(ids: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each instance, in id order."""
    boxes = []
    for box in ndi.find_objects(ids):
        if box is not None:
            boxes.append((box[1].start, box[0].start, box[1].stop, box[0].stop))
    return boxes
