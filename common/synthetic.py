"""Embedded, procedurally generated long-range datasets (no download, deterministic, any size 32..128).

Why a synthetic dataset at all? The papers in this repository are about *long-range dependencies*: LKCA's
global kernel, iiANET's global 2D-MHSA, HIRI-ViT's high-resolution inputs, Token Fusion's mixing of local
CNN tokens with global ViT tokens. CIFAR-10 can mostly be solved with local texture. The Long Range Arena's
**Pathfinder** task (Linsley et al. 2018; Tay et al. 2021) cannot: whether two dots are connected depends on
pixels that may be the whole image apart, and a model with a small receptive field is at chance. These
generators reproduce that kind of difficulty in a few milliseconds per image, on any machine, offline.

Tasks (all images are RGB floats in [-1, 1], shape (3, S, S)):

* ``pathfinder`` (2 classes). Several curvy dashed paths on a black background; two white discs mark two
  path endpoints. Label 1 if both discs sit on the *same* path, 0 if they sit on two different paths. Both
  classes contain the same number of paths and discs, so only connectivity separates them.

* ``pathfinder-colors`` (``num_classes`` = K, default 4). A white *start* disc and K coloured *target* discs
  (red, green, blue, yellow, ...). K paths each end at one target; exactly one of them starts at the white
  disc (the others start at unmarked points: every path has one marked and one unmarked end, except the
  connected one). Label: the colour of the target the white disc is connected
  to. This is the multi-class variant: the answer is a global property of a path that can wind across the
  whole image, and every target is a plausible answer locally.

* ``nearest-color`` (``num_classes`` = K in 2..4, default 4; **the default dataset**). A white disc and K coloured
  discs, one per colour, scattered over the image. Label: the colour of the disc *nearest* to the white one.
  Every sample is rejection-sampled so that the answer is unambiguous (the nearest disc is at most 0.75x as
  far as the runner-up) and never local (it is at least a quarter of the image away), so the answer is a
  relation between objects that are far apart: a model has to compare distances across the whole image.
  ``difficulty`` adds meaningless grey curves as clutter. It is the task the small models here can learn in
  minutes on a CPU: in the default job (``python -m common.train``, seed 0) LKCA-T is at chance after 186
  steps of batch 64 (26.8% validation accuracy), at 42.0% after 279, 87.7% after 651 and 95.3% after 930: a
  plateau at chance, then a sudden rise (typical of relational tasks). The Pathfinder tasks need
  far more data and steps (a GPU budget): on a CPU budget every model here stays at chance on them.

How an image is drawn (see ``_path_points``): a path is a random walk with smoothly varying heading
(curvature noise integrated twice, so paths bend but do not jitter), reflected at the image border
(a triangle-wave fold keeps the path continuous), sampled every half pixel, and cut into dashes so that
local pixel adjacency alone does not reveal connectivity (Pathfinder's trick against "flood fill" shortcuts).
``difficulty`` scales the path length and the number of distractor paths.

Determinism: sample ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split_id, i])``, so any
sample can be regenerated alone, independently of the order in which they are asked for, and train/val
never overlap. Datasets are rendered once into a uint8 tensor in memory (5,000 images at 32x32 take well
under a second per thousand on one CPU core).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

TASKS = ("pathfinder", "pathfinder-colors", "nearest-color")
# Target colours for pathfinder-colors (RGB, 0..255); the start disc is white. Chosen to be distinct
# in every channel pattern so that a per-channel model can tell them apart.
COLORS = np.array([
    (255, 40, 40), (40, 255, 40), (60, 90, 255), (255, 230, 40),
    (255, 40, 255), (40, 255, 255), (255, 140, 0), (150, 60, 255),
], dtype=np.uint8)
PATH_GRAY = 170                # paths are drawn in mid-grey, the markers on top in full colour
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
NEAREST_RADIUS = 3.0            # disc radius of nearest-color at 32 px (scaled with the image)
NEAREST_MAX_CLASSES = 4         # more discs than this rarely fit the constraints (see render)
NEAREST_TRIES = 20000           # rejection-sampling budget per nearest-color image (the default job's 7,000
                                # images at 32 px need at most 1,167 tries, median 78)
DEFAULT_DIFFICULTY = 0.0        # the one default (render, SyntheticLongRange, common.data.build_datasets)


def _fold(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect an unbounded coordinate into [lo, hi] (a triangle wave), keeping the path continuous."""
    span = hi - lo
    v = np.mod(u - lo, 2 * span)                                  # position inside one period
    return lo + np.where(v < span, v, 2 * span - v)


def _path_points(rng: np.random.Generator, size: int, length: float, start=None, bend: float = 1.0) -> np.ndarray:
    """A smooth random curve of the given arc length, as (n, 2) float pixel coordinates (x, y)."""
    step = 0.5                                                    # half-pixel sampling: no holes
    n = max(2, int(length / step))
    margin = 2.0 + size / 32
    if start is None:
        start = rng.uniform(margin, size - 1 - margin, size=2)
    heading = rng.uniform(0, 2 * math.pi)
    # Curvature (turn per step) is smoothed noise that reverts to zero: an exponentially weighted
    # moving sum of white noise (an AR(1) process). Paths bend gently like Pathfinder's "snakes" and rarely
    # curl into tight loops, which would make connectivity ambiguous even for a human.
    noise = rng.normal(0.0, 0.035 * bend, size=n + 40) * (32 / size) ** 0.5
    curvature = np.convolve(noise, 0.93 ** np.arange(40), mode="valid")[:n]   # (n,)
    theta = heading + np.cumsum(curvature)                         # (n,)
    xy = start + np.cumsum(step * np.stack([np.cos(theta), np.sin(theta)], 1), 0)  # (n, 2)
    return _fold(xy, margin, size - 1 - margin)


def _draw_path(img: np.ndarray, pts: np.ndarray, thick: int, dash: float, gap: float, value) -> None:
    """Rasterise a dashed path into img (H, W, 3) uint8 in place."""
    arc = np.arange(len(pts)) * 0.5                               # arc length of each sample
    keep = np.mod(arc, dash + gap) < dash                         # dashes: on for `dash`, off for `gap`
    keep[:2] = keep[-2:] = True                                   # endpoints always visible
    p = np.round(pts[keep]).astype(np.int64)                      # (m, 2)
    off = np.arange(thick) - (thick - 1) // 2                     # thickness as a small square brush
    ox, oy = np.meshgrid(off, off)
    px = (p[:, :1] + ox.reshape(1, -1)).ravel()
    py = (p[:, 1:] + oy.reshape(1, -1)).ravel()
    h, w = img.shape[:2]
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    img[py[ok], px[ok]] = value


def _draw_disc(img: np.ndarray, center, radius: float, value) -> None:
    h, w = img.shape[:2]
    cx, cy = center
    r = int(math.ceil(radius))
    ys, xs = np.mgrid[max(0, int(cy) - r - 1): min(h, int(cy) + r + 2), max(0, int(cx) - r - 1): min(w, int(cx) + r + 2)]
    inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
    img[ys[inside], xs[inside]] = value


def _far_enough(points, p, min_dist) -> bool:
    return all(np.hypot(*(np.asarray(q) - p)) >= min_dist for q in points)


def render(task: str, rng: np.random.Generator, size: int = 32, num_classes: int = 4,
           difficulty: float = DEFAULT_DIFFICULTY) -> tuple[np.ndarray, int]:
    """Draw one sample. Returns (image (S, S, 3) uint8, label)."""
    img = np.zeros((size, size, 3), np.uint8)
    thick = max(1, round(size / 32))
    dash, gap = 2.5 * thick, 1.0 * thick
    radius = 1.3 * thick + 0.4
    # Path length grows with the image (in pixels) and with difficulty (0.7 image widths at difficulty 0,
    # 1.5 at 1), and so does curvature (nearly straight at 0, snake-like at 1).
    length = size * (0.7 + 0.8 * difficulty)
    bend = 0.35 + 0.65 * difficulty
    min_sep = 3.0 * radius + 2                                       # markers never touch each other

    if task == "pathfinder":
        n_paths = 2 + int(round(2 * difficulty))                   # 2 candidate paths + distractors
        paths = [_path_points(rng, size, length, bend=bend) for _ in range(n_paths)]
        for p in paths:
            _draw_path(img, p, thick, dash, gap, PATH_GRAY)
        label = int(rng.integers(0, 2))
        a, b = paths[0], paths[1]
        ends = [a[0], a[-1]] if label == 1 else [a[0], b[-1]]
        for e in ends:
            _draw_disc(img, e, radius, 255)
        return img, label

    if task == "pathfinder-colors":
        k = num_classes
        if not 2 <= k <= len(COLORS):
            raise ValueError(f"pathfinder-colors supports 2..{len(COLORS)} classes, got {k}")
        label = int(rng.integers(0, k))
        # Place the K coloured targets first, well apart (cheap rejection sampling of 2-D points), then grow
        # one path *from* each target. The path of colour `label` gets the white start disc at its far end;
        # only that path is redrawn if its far end lands on another marker.
        margin = 2.0 + size / 32
        targets: list = []
        while len(targets) < k:
            p = rng.uniform(margin, size - 1 - margin, size=2)
            if _far_enough(targets, p, min_sep) or len(targets) and rng.random() < 0.02:
                targets.append(p)
        paths = [_path_points(rng, size, length, start=t, bend=bend) for t in targets]
        for _attempt in range(20):
            if _far_enough(targets, paths[label][-1], min_sep):
                break
            paths[label] = _path_points(rng, size, length, start=targets[label], bend=bend)
        for _ in range(int(round(difficulty))):                     # unmarked distractor paths
            _draw_path(img, _path_points(rng, size, length * 0.7, bend=bend), thick, dash, gap, PATH_GRAY)
        for p in paths:
            _draw_path(img, p, thick, dash, gap, PATH_GRAY)
        for c, t in enumerate(targets):
            _draw_disc(img, t, radius, COLORS[c])
        _draw_disc(img, paths[label][-1], radius, 255)
        return img, label

    if task == "nearest-color":
        k = num_classes
        if not 2 <= k <= NEAREST_MAX_CLASSES:
            raise ValueError(f"nearest-color supports 2..{NEAREST_MAX_CLASSES} classes, got {k}: with more discs "
                             "the constraints below often cannot be met (measured at 32 px with the full "
                             "budget of tries: K=6 failed on 5 of 10 images, K=8 on 3 of 3)")
        # One white disc and K coloured discs (one per colour). Label: the colour of the disc nearest to the
        # white one. Rejection-sampled so that the answer is unambiguous (the nearest disc is at most 0.75x as
        # far as the second nearest) and never local (the nearest disc is at least a quarter of the image away).
        # Discs are larger than Pathfinder's markers (radius ~ size / 10, about one 4x4 patch at 32 px): the
        # task is about *relations* between far-apart objects, not about finding a few pixels.
        radius = NEAREST_RADIUS * size / 32
        margin = radius + 1.0
        for _attempt in range(NEAREST_TRIES):
            pts = rng.uniform(margin, size - 1 - margin, size=(k + 1, 2))      # (K+1, 2): white first
            gaps = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))    # (K+1, K+1)
            if (gaps + np.eye(k + 1) * 1e9).min() < 2 * radius + 2:
                continue
            d = np.sort(gaps[0, 1:])
            if d[0] >= 0.25 * size and d[0] <= 0.75 * d[1]:
                break
        else:   # never keep a sample that breaks the task's promise: too many discs for the image
            raise ValueError(f"nearest-color could not place {k} coloured discs at {size}x{size} px in "
                             f"{NEAREST_TRIES} tries (discs must not touch, the nearest must be >= a quarter of "
                             f"the image away and <= 0.75x as far as the runner-up); use fewer classes "
                             f"or a larger img_size (num_classes=4 at 32 px or more is the tested setting)")
        label = int(np.argmin(gaps[0, 1:]))
        for _ in range(int(round(2 * difficulty))):                     # distractor curves (no meaning)
            _draw_path(img, _path_points(rng, size, length * 0.7, bend=bend), thick, dash, gap, PATH_GRAY)
        for c in range(k):
            _draw_disc(img, pts[c + 1], radius, COLORS[c])
        _draw_disc(img, pts[0], radius, 255)
        return img, label

    raise ValueError(f"unknown synthetic task {task!r}; choose one of {TASKS}")


class SyntheticLongRange(Dataset):
    """A split of an embedded long-range task, rendered once into memory.

    Args:
        task: "pathfinder" or "pathfinder-colors".
        split: "train", "val" or "test" (disjoint random streams).
        size: number of samples.
        img_size: side length in pixels (32..128 recommended; any >= 16 works).
        num_classes: classes for pathfinder-colors (2..8); pathfinder is always 2.
        difficulty: path length / distractor scale (0 = gentle, the default everywhere; 1 = long snake-like
            curves with distractors; 2 = harder).
        seed: base seed; the same (seed, split, index) always gives the same image.
    Items are (image (3, S, S) float32 in [-1, 1], label int).
    """

    def __init__(self, task: str = "pathfinder-colors", split: str = "train", size: int = 5000,
                 img_size: int = 32, num_classes: Optional[int] = None,
                 difficulty: float = DEFAULT_DIFFICULTY,
                 seed: int = 0, transform=None):
        if task not in TASKS:
            raise ValueError(f"unknown synthetic task {task!r}; choose one of {TASKS}")
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
        if img_size < 16:
            raise ValueError(f"img_size must be at least 16 pixels for the paths to be drawable, got {img_size}")
        self.task, self.split, self.img_size, self.difficulty, self.seed = task, split, img_size, difficulty, seed
        self.num_classes = 2 if task == "pathfinder" else (num_classes or 4)
        self.classes = (["different paths", "same path"] if task == "pathfinder"
                        else ["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "violet"][: self.num_classes])
        self.transform = transform
        imgs = np.empty((size, img_size, img_size, 3), np.uint8)
        labels = np.empty(size, np.int64)
        for i in range(size):
            rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
            imgs[i], labels[i] = render(task, rng, img_size, self.num_classes, difficulty)
        self.images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()   # (n, 3, S, S) uint8
        self.targets = torch.from_numpy(labels)                                  # (n,)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(127.5).sub_(1.0)              # (3, S, S) in [-1, 1]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])
