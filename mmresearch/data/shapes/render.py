"""Fast numpy rendering of shapes scenes to uint8 RGB images.

Each shape is a (approximate) signed distance function in units of the object's radius; the
coverage of a pixel is ``clip(0.5 - distance_in_pixels, 0, 1)``, which gives cheap anti-aliased
edges. Rendering is batched: backgrounds for a chunk of images at once, then objects grouped by
(slot in scene, shape, size), each group evaluated on small square patches around the objects and
composited with one gather/scatter. Objects are flat-coloured (a pixel well inside an object has
exactly the object's RGB); noise and gradient only touch the background.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmresearch.data.shapes.scene import SIZE_JITTER, Scene
from mmresearch.data.shapes.vocabulary import ALL_SHAPES, COLOURS, SIZE_RADIUS

_NOISE_TEXTURES = 16


def _convex(vertices: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals ``[E, 2]`` and offsets ``[E]`` of a convex polygon's edges."""
    pts = np.asarray(vertices, dtype=np.float64)
    centre = pts.mean(axis=0)
    normals, offsets = [], []
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        n = np.array([b[1] - a[1], a[0] - b[0]])
        n /= np.linalg.norm(n)
        if n @ (centre - a) > 0:
            n = -n
        normals.append(n)
        offsets.append(n @ a)
    return np.array(normals, dtype=np.float32), np.array(offsets, dtype=np.float32)


def _star_parts(inner: float = 0.5, extend: float = 0.35) -> list[tuple[np.ndarray, np.ndarray]]:
    """A five-pointed star as convex parts: the inner pentagon and five spikes (tip triangles whose
    base is pushed ``extend`` into the pentagon, so parts overlap and their union has no seams)."""
    tips = [math.radians(-90 + 72 * k) for k in range(5)]
    inner_pts = [(inner * math.cos(t + math.radians(36)), inner * math.sin(t + math.radians(36))) for t in tips]
    parts = [_convex(inner_pts)]
    for k, t in enumerate(tips):
        tip = np.array([math.cos(t), math.sin(t)])
        left, right = np.array(inner_pts[k - 1]), np.array(inner_pts[k])
        parts.append(_convex([tuple(tip), tuple(left + extend * (left - tip)), tuple(right + extend * (right - tip))]))
    return parts


_STAR = _star_parts()
_CROSS_HALF_WIDTH = 0.34
_SQUARE_HALF_SIDE = 0.85
_SQRT2 = math.sqrt(2.0)
_TRI_NORM = math.sqrt(1.8**2 + 1.0)


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) of ``shape`` in units of its radius.

    ``u`` (right) and ``v`` (down) are coordinates relative to the object centre divided by its
    radius, broadcastable against each other. Every shape fits in the square ``[-1, 1]^2``.
    """
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - _SQUARE_HALF_SIDE
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.0) / _SQRT2
    if shape == "triangle":  # apex up at v=-0.9, base at v=0.9 from u=-1 to 1
        return np.maximum(v - 0.9, (1.8 * np.abs(u) - v - 0.9) / _TRI_NORM)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        w = _CROSS_HALF_WIDTH
        return np.minimum(np.maximum(au - w, av - 1.0), np.maximum(au - 1.0, av - w))
    if shape == "star":
        best = None
        for normals, offsets in _STAR:
            d = None
            for (nx, ny), c in zip(normals.tolist(), offsets.tolist()):
                e = nx * u + ny * v - c
                d = e if d is None else np.maximum(d, e)
            best = d if best is None else np.minimum(best, d)
        return best
    raise ValueError(f"unknown shape {shape!r}; allowed: {list(ALL_SHAPES)}")


@lru_cache(maxsize=8)
def _noise_windows(image_size: int) -> np.ndarray:
    """Fixed uniform noise textures in [-1, 1] ``[K, 2S, 2S]``, viewed as all their ``S x S``
    windows ``[K, S + 1, S + 1, S, S]`` (a scene picks one window)."""
    rng = np.random.default_rng(1234567)
    bank = rng.random((_NOISE_TEXTURES, 2 * image_size, 2 * image_size), dtype=np.float32) * 2.0 - 1.0
    return sliding_window_view(bank, (image_size, image_size), axis=(1, 2))


def _coverage(shape: str, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, x0: np.ndarray, y0: np.ndarray, patch: int):
    """Coverage ``[m, P, P]`` of ``m`` objects (pixel units) on patches starting at ``(x0, y0)``."""
    ar = np.arange(patch, dtype=np.float32) + 0.5
    inv = (1.0 / r)[:, None]
    u = ((x0[:, None] + ar[None, :]) - cx[:, None]) * inv  # [m, P] along x
    v = ((y0[:, None] + ar[None, :]) - cy[:, None]) * inv  # [m, P] along y
    d = shape_sdf(shape, u[:, None, :], v[:, :, None])  # [m, P(y), P(x)]
    d *= r[:, None, None]
    np.subtract(0.5, d, out=d)
    np.clip(d, 0.0, 1.0, out=d)
    return d


def _patch_size(size: str, image_size: int) -> int:
    return min(image_size, int(math.ceil(2 * SIZE_RADIUS[size] * (1 + SIZE_JITTER) * image_size)) + 3)


def _render_chunk(scenes: Sequence[Scene], image_size: int, canvas: np.ndarray, field: np.ndarray) -> None:
    """Renders scenes into the float32 workspace ``canvas`` ``[n, 3, S, S]`` (values 0-255)."""
    size = image_size
    background = [sc.background for sc in scenes]
    bg = np.array([b.rgb for b in background], dtype=np.float32)
    grad = np.array([b.gradient for b in background], dtype=np.float32)
    amp = np.array([b.noise for b in background], dtype=np.float32)
    seeds = np.array([b.noise_seed for b in background], dtype=np.int64)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    np.multiply(grad[:, 0, None, None], coords[None, None, :], out=field)
    field += grad[:, 1, None, None] * coords[None, :, None]
    if (amp > 0).any():
        windows = _noise_windows(size)
        tex = seeds % _NOISE_TEXTURES
        oy = (seeds // _NOISE_TEXTURES) % (size + 1)
        ox = (seeds // (_NOISE_TEXTURES * (size + 1))) % (size + 1)
        noise = windows[tex, oy, ox]  # [n, S, S]
        noise *= amp[:, None, None]
        field += noise
    for c in range(3):
        np.add(field, bg[:, c, None, None], out=canvas[:, c])

    rows = [
        (i, k, o.shape, o.size, o.colour, o.x, o.y, o.radius)
        for i, sc in enumerate(scenes)
        for k, o in enumerate(sc.objects)
    ]
    if not rows:
        return
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    slot = np.array([r[1] for r in rows], dtype=np.int64)
    shape = np.array([r[2] for r in rows])
    sizes = np.array([r[3] for r in rows])
    colour = np.array([COLOURS[r[4]] for r in rows], dtype=np.float32)
    geo = np.array([r[5:] for r in rows], dtype=np.float32) * np.float32(size)
    for size_name in SIZE_RADIUS:
        patch = _patch_size(size_name, size)
        # every P x P window of the canvas; writing through it writes the canvas
        windows = sliding_window_view(canvas, (patch, patch), axis=(2, 3), writeable=True)
        for shape_name in np.unique(shape).tolist():
            for k in np.unique(slot).tolist():
                # one object per image per group: no two patches of a group touch the same pixels
                sel = np.nonzero((slot == k) & (shape == shape_name) & (sizes == size_name))[0]
                if len(sel) == 0:
                    continue
                cx, cy, r = geo[sel, 0], geo[sel, 1], geo[sel, 2]
                # patch corners, shifted to stay inside the image (objects are inside it)
                x0 = np.clip(np.floor(cx - patch / 2.0), 0, size - patch)
                y0 = np.clip(np.floor(cy - patch / 2.0), 0, size - patch)
                alpha = _coverage(shape_name, cx, cy, r, x0, y0, patch)
                xi, yi, img = x0.astype(np.int64), y0.astype(np.int64), idx[sel]
                region = windows[img, :, yi, xi]  # [m, 3, P, P]
                region += alpha[:, None] * (colour[sel][:, :, None, None] - region)
                windows[img, :, yi, xi] = region


def render_scenes(
    scenes: Sequence[Scene], image_size: int = 64, channels_last: bool = True, chunk_size: int = 256
) -> np.ndarray:
    """Renders scenes to uint8 images ``[N, S, S, 3]`` (or ``[N, 3, S, S]`` if not channels_last).

    The result depends only on the scenes and ``image_size`` (not on chunking or batch order).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    n_total = len(scenes)
    out = np.empty((n_total, 3, image_size, image_size), dtype=np.uint8)
    chunk = max(1, min(chunk_size, n_total))
    canvas = np.empty((chunk, 3, image_size, image_size), dtype=np.float32)
    field = np.empty((chunk, image_size, image_size), dtype=np.float32)
    for start in range(0, n_total, chunk):
        n = min(chunk, n_total - start)
        work = canvas[:n]
        _render_chunk(scenes[start : start + n], image_size, work, field[:n])
        work += 0.5  # float -> uint8 truncates: +0.5 rounds
        np.clip(work, 0.0, 255.0, out=out[start : start + n], casting="unsafe")
    if channels_last:
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1))
    return out


def render_scene(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Renders one scene to a uint8 ``[S, S, 3]`` image."""
    return render_scenes([scene], image_size)[0]


def object_masks(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Coverage ``[num_objects, S, S]`` in [0, 1] of each object alone (for tests and analysis)."""
    s = float(image_size)
    ys, xs = np.meshgrid(np.arange(image_size) + 0.5, np.arange(image_size) + 0.5, indexing="ij")
    masks = []
    for o in scene.objects:
        r = o.radius * s
        d = shape_sdf(o.shape, (xs - o.x * s) / r, (ys - o.y * s) / r) * r
        masks.append(np.clip(0.5 - d, 0.0, 1.0))
    return np.stack(masks).astype(np.float32) if masks else np.zeros((0, image_size, image_size), np.float32)
