"""Figures for qualitative evaluation of image-text models: pure matplotlib, no pyplot state.

Every function builds a :class:`matplotlib.figure.Figure` directly (rendered by the Agg canvas),
so it is safe in headless processes, threads and DDP workers, and returns it; write it with
:func:`save_figure`. Tensors may be ``torch.Tensor`` or numpy arrays (on any device).

Shapes use: ``B`` images and ``T`` captions of a batch, ``N`` gallery images, ``Q`` queries,
``E`` embedding size, ``H x W`` image size. Images to display are uint8 ``[*, 3, H, W]``.

The retrieval grids mark what is correct with colours (green: a true match, red: not) and tag
the artists with ``gid`` ``"match"`` / ``"miss"``; :func:`top_k_matches` computes the same marks
as data, for tests and for callers that want the numbers.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Rectangle

ArrayLike = Union[torch.Tensor, np.ndarray]

MATCH_COLOUR = "#1a9641"  # green: a true match
MISS_COLOUR = "#d7191c"  # red: retrieved but not a true match
NEUTRAL_COLOUR = "#888888"  # no ground truth given
CHECK, CROSS = "\u2713", "\u2717"
_METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE"}


# ------------------------------------------------------------------------------------------------
# Helpers


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _hwc_uint8(image: ArrayLike) -> np.ndarray:
    """``[3, H, W]`` (uint8, or float in [0, 1]; ``[H, W, 3]`` also accepted) -> ``[H, W, 3]`` uint8."""
    img = _numpy(image)
    if img.ndim != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(img.shape)}")
    if img.shape[0] in (1, 3):  # CHW (the documented layout); an HWC image passes through
        img = np.transpose(img, (1, 2, 0))
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def wrap_text(text: str, width: int, max_lines: int) -> str:
    """Wrap ``text`` to lines of at most ``width`` characters, at most ``max_lines`` of them (the
    last one ends with an ellipsis when text was cut)."""
    lines = textwrap.wrap(str(text), width=width, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        lines[-1] = (last if len(last) < width else last[: width - 1].rstrip()) + "\u2026"
    return "\n".join(lines)


def _style_frame(ax, colour: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def true_index_to_mask(true_index: ArrayLike, num_items: int) -> np.ndarray:
    """``[Q]`` index of the one true item per query (negative: none) -> bool mask ``[Q, N]``."""
    idx = _numpy(true_index).astype(np.int64).reshape(-1)
    mask = np.zeros((len(idx), num_items), dtype=bool)
    rows = np.nonzero((idx >= 0) & (idx < num_items))[0]
    mask[rows, idx[rows]] = True
    return mask


@dataclass
class TopK:
    """The ``k`` best-scored items per query.

    Attributes:
        indices: ``[Q, k]`` long, item index by decreasing score (ties: lower index first).
        scores: ``[Q, k]`` float, their scores.
        correct: ``[Q, k]`` bool, whether each retrieved item is a true match (None without truth).
        true_rank: ``[Q]`` long, 1-based rank of the best-ranked true item, ties counted against
            the query like the retrieval metrics (0 when the query has no true item; None without
            truth).
    """

    indices: np.ndarray
    scores: np.ndarray
    correct: Optional[np.ndarray] = None
    true_rank: Optional[np.ndarray] = None


def top_k_matches(similarity: ArrayLike, k: int, true_mask: Optional[ArrayLike] = None) -> TopK:
    """Top ``k`` items per query of ``similarity [Q, N]`` and, with ``true_mask [Q, N]`` bool,
    which of them are correct and where the first true item ranks."""
    sim = _numpy(similarity).astype(np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be [Q, N], got shape {tuple(sim.shape)}")
    k = max(0, min(int(k), sim.shape[1]))
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(sim, order, axis=1)
    if true_mask is None:
        return TopK(order, scores)
    mask = _numpy(true_mask).astype(bool)
    if mask.shape != sim.shape:
        raise ValueError(f"true_mask has shape {tuple(mask.shape)}, similarity {tuple(sim.shape)}")
    correct = np.take_along_axis(mask, order, axis=1)
    best_true = np.where(mask, sim, -np.inf).max(axis=1)
    beaten = ((sim >= best_true[:, None]) & ~mask).sum(axis=1)
    true_rank = np.where(mask.any(axis=1), beaten + 1, 0).astype(np.int64)
    return TopK(order, scores, correct, true_rank)


# ------------------------------------------------------------------------------------------------
# Figures


def similarity_heatmap(
    similarity: ArrayLike,
    row_labels: Sequence[str],
    col_labels: Optional[Sequence[str]] = None,
    title: str = "Image-caption cosine similarity",
    true_mask: Optional[ArrayLike] = None,
    row_images: Optional[ArrayLike] = None,
    annotate: Optional[bool] = None,
    wrap_width: int = 18,
    max_lines: int = 8,
) -> Figure:
    """Heatmap of the cosine similarity of ``B`` images (rows) and ``T`` captions (columns).

    Args:
        similarity: ``[B, T]`` float, e.g. 8 images x their first captions.
        row_labels: ``B`` row names (e.g. ``"image 12"``).
        col_labels: ``T`` captions, wrapped under their column; None numbers the columns.
        title: figure title.
        true_mask: ``[B, T]`` bool, the true pairs, outlined in red; None outlines the diagonal.
        row_images: optional uint8 ``[B, 3, H, W]`` thumbnails drawn left of the rows.
        annotate: write the score in every cell (bold: the best caption of the row); None does so
            when there are at most 400 cells.
        wrap_width, max_lines: caption wrapping (characters per line, lines).

    The true-pair outlines are ``Rectangle`` patches with ``gid="true-pair"``.
    """
    sim = _numpy(similarity).astype(np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be [B, T], got shape {tuple(sim.shape)}")
    b, t = sim.shape
    if len(row_labels) != b:
        raise ValueError(f"{len(row_labels)} row labels for {b} rows")
    if col_labels is not None and len(col_labels) != t:
        raise ValueError(f"{len(col_labels)} column labels for {t} columns")
    mask = np.eye(b, t, dtype=bool) if true_mask is None else _numpy(true_mask).astype(bool)
    if mask.shape != sim.shape:
        raise ValueError(f"true_mask has shape {tuple(mask.shape)}, similarity {tuple(sim.shape)}")
    annotate = (b * t <= 400) if annotate is None else annotate

    cell = 1.15  # inches per cell
    thumbs = row_images is not None and b > 0
    left = 1.0 + (cell if thumbs else 0.0)
    caption_lines = max_lines if col_labels is not None else 1
    bottom = 0.35 + 0.14 * caption_lines
    fig = _new_figure(left + cell * t + 1.2, 0.7 + cell * b + bottom)
    ax = fig.add_axes((left / fig.get_figwidth(), bottom / fig.get_figheight(),
                       cell * t / fig.get_figwidth(), cell * b / fig.get_figheight()))
    cax = fig.add_axes(((left + cell * t + 0.2) / fig.get_figwidth(), bottom / fig.get_figheight(),
                        0.18 / fig.get_figwidth(), cell * b / fig.get_figheight()))
    finite = sim[np.isfinite(sim)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(sim, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_label("cosine similarity")

    if annotate:
        best = sim.argmax(axis=1) if t else np.zeros(b, dtype=int)
        for i in range(b):
            for j in range(t):
                shade = (sim[i, j] - vmin) / (vmax - vmin)
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="black" if shade > 0.6 else "white", fontweight="bold" if j == best[i] else "normal")
    for i, j in zip(*np.nonzero(mask)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=MISS_COLOUR, linewidth=3,
                               gid="true-pair", zorder=3))

    ax.set_xticks(range(t))
    if col_labels is None:
        ax.set_xticklabels([f"caption {j}" for j in range(t)], fontsize=8)
    else:
        ax.set_xticklabels([wrap_text(c, wrap_width, max_lines) for c in col_labels], fontsize=8,
                           va="top", linespacing=1.1)
    ax.set_yticks(range(b))
    ax.set_yticklabels(list(row_labels), fontsize=8)
    ax.tick_params(length=0)
    if thumbs:
        imgs = _numpy(row_images)
        zoom = cell * 72 * 0.88 / max(imgs.shape[-2], imgs.shape[-1])
        for i in range(b):
            box = AnnotationBbox(OffsetImage(_hwc_uint8(imgs[i]), zoom=zoom), (0, i),
                                 xybox=(-4, 0), xycoords=("axes fraction", "data"), boxcoords="offset points",
                                 box_alignment=(1, 0.5), frameon=False, annotation_clip=False)
            ax.add_artist(box)
        ax.tick_params(axis="y", pad=cell * 72 * 0.88 + 8)
    ax.set_title(title + "\n(red boxes: true image-caption pairs; bold: best caption of each image)", fontsize=10)
    return fig


def text_to_image_grid(
    query_captions: Sequence[str],
    images: ArrayLike,
    similarity: ArrayLike,
    true_index: Optional[ArrayLike] = None,
    k: int = 5,
    title: str = "Text-to-image retrieval",
    wrap_width: int = 30,
) -> Figure:
    """One row per caption: the caption and its top-``k`` images with their scores.

    Args:
        query_captions: ``Q`` captions.
        images: uint8 ``[N, 3, H, W]``, the gallery.
        similarity: ``[Q, N]`` caption-image scores.
        true_index: ``[Q]`` long index of each caption's image (negative: none), or a bool mask
            ``[Q, N]`` when several images are true; None shows no marks.
        k: images shown per caption.

    A retrieved image gets a thick green frame (``gid="match"``) when it is a true image of the
    caption, a red one (``gid="miss"``) otherwise; the caption panel says where the true image ranks.
    """
    sim = _numpy(similarity)
    q, n = sim.shape
    if len(query_captions) != q:
        raise ValueError(f"{len(query_captions)} captions for {q} similarity rows")
    imgs = _numpy(images)
    if imgs.shape[0] != n:
        raise ValueError(f"{imgs.shape[0]} images for {n} similarity columns")
    mask = None
    if true_index is not None:
        ti = _numpy(true_index)
        mask = ti.astype(bool) if ti.ndim == 2 else true_index_to_mask(ti, n)
    top = top_k_matches(sim, k, mask)
    k = top.indices.shape[1]

    cell = 1.45
    text_w = 2.9
    fig = _new_figure(text_w + cell * max(k, 1), 0.55 + (cell + 0.3) * q)
    grid = fig.add_gridspec(q, k + 1, width_ratios=[text_w / cell] + [1] * k, left=0.01, right=0.99,
                            top=1 - 0.55 / fig.get_figheight(), bottom=0.01, hspace=0.35, wspace=0.08)
    for r in range(q):
        tax = fig.add_subplot(grid[r, 0])
        tax.axis("off")
        tax.text(0.0, 0.62, wrap_text(query_captions[r], wrap_width, 6), ha="left", va="center", fontsize=9.5,
                 transform=tax.transAxes, linespacing=1.2)
        if top.true_rank is not None:
            rank = int(top.true_rank[r])
            note = "no true image" if rank == 0 else f"true image at rank {rank}"
            colour = MATCH_COLOUR if rank == 1 else (NEUTRAL_COLOUR if rank == 0 else MISS_COLOUR)
            tax.text(0.0, 0.08, note, ha="left", va="center", fontsize=8.5, color=colour, style="italic",
                     transform=tax.transAxes)
        for c in range(k):
            ax = fig.add_subplot(grid[r, c + 1])
            idx = int(top.indices[r, c])
            ax.imshow(_hwc_uint8(imgs[idx]), interpolation="nearest")
            if top.correct is None:
                _style_frame(ax, NEUTRAL_COLOUR, 0.8)
            else:
                ok = bool(top.correct[r, c])
                _style_frame(ax, MATCH_COLOUR if ok else MISS_COLOUR, 4.0)
                ax.set_gid("match" if ok else "miss")
            ax.set_title(f"#{c + 1}  {top.scores[r, c]:.3f}", fontsize=8.5, pad=3)
    fig.suptitle(f"{title}: top-{k} of {n} images per caption (green frame: true image)", fontsize=11,
                 y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


def image_to_text_grid(
    query_images: ArrayLike,
    captions: Sequence[str],
    similarity: ArrayLike,
    true_mask: Optional[ArrayLike] = None,
    k: int = 5,
    title: str = "Image-to-text retrieval",
    query_labels: Optional[Sequence[str]] = None,
    wrap_width: int = 78,
) -> Figure:
    """One row per image: the image and its top-``k`` captions with their scores.

    Args:
        query_images: uint8 ``[Q, 3, H, W]``.
        captions: ``T`` captions, the gallery.
        similarity: ``[Q, T]`` image-caption scores.
        true_mask: ``[Q, T]`` bool, the true captions of each image; None shows no marks.
        k: captions shown per image.
        query_labels: optional ``Q`` names shown under the images.

    A caption line starts with a check mark and is green (``gid="match"``) when it is a true
    caption of the image, a cross and red (``gid="miss"``) otherwise.
    """
    sim = _numpy(similarity)
    q, t = sim.shape
    imgs = _numpy(query_images)
    if imgs.shape[0] != q:
        raise ValueError(f"{imgs.shape[0]} images for {q} similarity rows")
    if len(captions) != t:
        raise ValueError(f"{len(captions)} captions for {t} similarity columns")
    top = top_k_matches(sim, k, true_mask)
    k = top.indices.shape[1]

    img_w, text_w = 1.6, 7.4
    row_h = max(1.6, 0.36 * k + 0.1)
    fig = _new_figure(img_w + text_w, 0.55 + (row_h + 0.25) * q)
    grid = fig.add_gridspec(q, 2, width_ratios=[img_w, text_w], left=0.01, right=0.99,
                            top=1 - 0.55 / fig.get_figheight(), bottom=0.01, hspace=0.25, wspace=0.04)
    for r in range(q):
        iax = fig.add_subplot(grid[r, 0])
        iax.imshow(_hwc_uint8(imgs[r]), interpolation="nearest")
        _style_frame(iax, NEUTRAL_COLOUR, 0.8)
        label = query_labels[r] if query_labels is not None else f"query {r}"
        if top.true_rank is not None:
            rank = int(top.true_rank[r])
            label += "\n" + ("no true caption" if rank == 0 else f"first true caption: rank {rank}")
        iax.set_xlabel(label, fontsize=8, labelpad=3)
        tax = fig.add_subplot(grid[r, 1])
        tax.axis("off")
        for c in range(k):
            y = 1.0 - (c + 0.5) / k
            text = wrap_text(captions[int(top.indices[r, c])], wrap_width, 2)
            if top.correct is None:
                mark, colour, gid = " ", "black", None
            else:
                ok = bool(top.correct[r, c])
                mark, colour, gid = (CHECK, MATCH_COLOUR, "match") if ok else (CROSS, MISS_COLOUR, "miss")
            tax.text(0.0, y, f"{mark} #{c + 1}  {top.scores[r, c]:.3f}", ha="left", va="center", fontsize=9,
                     color=colour, fontweight="bold", transform=tax.transAxes, family="DejaVu Sans Mono", gid=gid)
            tax.text(0.155, y, text, ha="left", va="center", fontsize=9, color=colour, transform=tax.transAxes,
                     linespacing=1.05, gid=gid)
    fig.suptitle(f"{title}: top-{k} of {t} captions per image (\u2713 green: a true caption)", fontsize=11,
                 y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


def project_2d(embeddings: ArrayLike, method: str = "pca", random_state: int = 0) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``[N, E]`` -> ``([N, 2]`` coordinates, explained-variance ratios ``[2]`` for PCA else None)."""
    x = _numpy(embeddings).astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, E], got shape {tuple(x.shape)}")
    n = x.shape[0]
    if method == "pca":
        x = x - x.mean(axis=0, keepdims=True)
        if n == 0:
            return np.zeros((0, 2)), np.zeros(2)
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        coords = x @ vt[:2].T
        # a deterministic sign: the largest loading of each component is positive
        signs = np.sign(vt[:2][np.arange(min(2, len(vt))), np.abs(vt[:2]).argmax(axis=1)])
        coords = coords * np.where(signs == 0, 1, signs)
        var = s**2
        ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(min(2, len(var)))
        if coords.shape[1] < 2:  # fewer than 2 components (E == 1 or N == 1)
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
            ratio = np.pad(ratio, (0, 2 - len(ratio)))
        return coords, ratio
    if method == "tsne":
        if n < 4:
            return project_2d(x, "pca")[0], None
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state)
        return tsne.fit_transform(x.astype(np.float32)).astype(np.float64), None
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def embedding_projection(
    embeddings: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    title: str = "Image embeddings",
    method: str = "pca",
    random_state: int = 0,
) -> Figure:
    """2-D projection of ``embeddings [N, E]`` coloured by ``labels [N]`` (class ids into
    ``class_names``), with a legend of the classes present. ``method``: ``"pca"`` (exact, via SVD)
    or ``"tsne"`` (``sklearn.manifold.TSNE``, deterministic ``random_state``)."""
    coords, ratio = project_2d(embeddings, method, random_state)
    lab = _numpy(labels).astype(np.int64).reshape(-1)
    if len(lab) != len(coords):
        raise ValueError(f"{len(lab)} labels for {len(coords)} embeddings")
    fig = _new_figure(7.6, 5.6)
    ax = fig.add_axes((0.09, 0.1, 0.66, 0.8))
    present = sorted(set(lab.tolist()))
    cmap = _class_colours(max(len(class_names), max(present, default=0) + 1), class_names)
    size = 28 if len(lab) <= 300 else (14 if len(lab) <= 2000 else 6)
    for c in present:
        sel = lab == c
        name = class_names[c] if 0 <= c < len(class_names) else f"class {c}"
        ax.scatter(coords[sel, 0], coords[sel, 1], s=size, color=cmap[c % len(cmap)], alpha=0.8,
                   edgecolors="#333333", linewidths=0.4, label=f"{name} ({int(sel.sum())})")
    if present:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False, markerscale=1.3,
                  title="class (count)", title_fontsize=9)
    if method == "pca" and ratio is not None:
        ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.1f}% variance)")
        ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.1f}% variance)")
    else:
        ax.set_xlabel(f"{_METHOD_NAMES.get(method, method)} 1")
        ax.set_ylabel(f"{_METHOD_NAMES.get(method, method)} 2")
    ax.grid(True, alpha=0.25)
    ax.set_title(f"{title} ({_METHOD_NAMES.get(method, method)}, {len(lab)} points)", fontsize=11)
    return fig


def _class_colours(n: int, class_names: Sequence[str] = ()) -> list:
    """One colour per class: the class names themselves when they all name colours (colour labels
    drawn in their own colour), else a qualitative colour map."""
    from matplotlib import colormaps
    from matplotlib.colors import is_color_like

    names = [str(c) for c in class_names]
    if names and len(names) >= n and all(is_color_like(c) and not c.replace(".", "").isdigit() for c in names):
        return names
    if n <= 10:
        return list(colormaps["tab10"].colors)
    if n <= 20:
        return list(colormaps["tab20"].colors)
    cmap = colormaps["hsv"]
    return [cmap(i / n) for i in range(n)]


def _number(value: str) -> Optional[float]:
    try:
        return float(value)
    except ValueError:
        return None


def errorbar_series(
    series: Mapping[str, Sequence[tuple[str, float, float]]], xlabel: str, ylabel: str, title: Optional[str] = None
) -> Figure:
    """Means with error bars against a setting, one series per label.

    When every x value is a number, each series is a line through its points in x order (a log
    axis when the values are positive and span 8x or more). Otherwise x is categorical (loss
    names, model families): each setting is a point with its error bar and no line joins two
    categories (their order means nothing); the series sit side by side within a category.

    Args:
        series: ``{label: [(x value, mean, std), ...]}``; x values are strings (setting values);
            an empty label draws no legend entry.
        xlabel, ylabel, title: axis labels and an optional title.
    """
    numeric = all(_number(x) is not None for points in series.values() for x, _, _ in points)
    order = lambda v: (0, _number(v), "") if _number(v) is not None else (1, 0.0, v)  # noqa: E731
    categories = sorted({x for points in series.values() for x, _, _ in points}, key=order)
    fig = _new_figure(5.5, 3.6)
    ax = fig.add_subplot()
    step = min(0.15, 0.6 / max(len(series), 1))  # categorical: the series' offsets within a category
    for i, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda p: order(p[0]))
        if numeric:
            xs, style = [float(p[0]) for p in points], "-"
        else:
            offset = (i - (len(series) - 1) / 2) * step
            xs, style = [categories.index(p[0]) + offset for p in points], "none"
        ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", linestyle=style, capsize=3,
                    label=label or None)
    if numeric:
        values = [float(c) for c in categories]
        if min(values) > 0 and max(values) / min(values) >= 8:
            ax.set_xscale("log")
        ax.set_xticks(values, categories)
    else:
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if any(series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Union[str, Path], dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (tight bounding box, white background), creating parent folders, and
    release it (``fig.clear()``: the figure is empty afterwards). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white", format="png")
    fig.clear()
    return path
